//! Apps that host actors over a stream they open
//! (`SubscribeActorEventsAlpha1`, Dapr 1.18): the app registers its actor
//! types and settings in the first message; the sidecar answers with an
//! acknowledgement, then sends the actor calls — method invocations,
//! reminders, timers, deactivations — on the stream, each with an id the
//! app's answer carries back. No port of the app's is called for actors.
//!
//! The registration takes the place of `GET /dapr/config`: the types join
//! the placement table at once (the acknowledgement follows the heartbeat
//! that publishes them). When the app's last stream closes its types leave
//! the table, and calls still waiting for an answer fail with a message
//! that says the host went away.

use super::config::ActorConfig;
use super::{Actors, Answer, CANCEL_HEADER, Call, ERROR_HEADER, REENTRANCY_HEADER, err};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use prost::Message;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tandem_proto::runtime::v1 as rt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use rt::subscribe_actor_events_request_alpha1::RequestType as FromApp;
use rt::subscribe_actor_events_response_alpha1::ResponseType as ToApp;

type Out = Result<rt::SubscribeActorEventsResponseAlpha1, Status>;

/// How the payload of a reminder or timer travels: the JSON value as the
/// bytes of a `google.protobuf.BytesValue`, as daprd sends it.
const BYTES_VALUE: &str = "type.googleapis.com/google.protobuf.BytesValue";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_MALFORMED_REQUEST",
        message,
    )
}

/// One open stream: calls sent on it wait here for their answers.
pub struct StreamHost {
    tx: mpsc::Sender<Out>,
    waiting: Mutex<HashMap<String, oneshot::Sender<FromApp>>>,
    next: AtomicU64,
}

/// Forgets a call's place in `waiting` however the call ends.
struct Waiting<'a> {
    host: &'a StreamHost,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.host
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&self.id);
    }
}

fn gone() -> ApiError {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ERR_ACTOR_INVOKE_METHOD",
        "error invoke actor method: the actor host disconnected before answering",
    )
}

/// A reminder's or timer's JSON payload as the stream carries it.
fn payload(v: &Value) -> Option<prost_types::Any> {
    (!v.is_null()).then(|| prost_types::Any {
        type_url: BYTES_VALUE.into(),
        value: serde_json::to_vec(v).unwrap_or_default().encode_to_vec(),
    })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The callback's headers as the stream's metadata: the first value of
/// each, the chain's reentrancy id set.
fn metadata(headers: &HeaderMap, chain: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            m.entry(k.as_str().to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    m.remove(REENTRANCY_HEADER);
    if let Some(id) = chain {
        m.insert(REENTRANCY_HEADER.to_string(), id.to_string());
    }
    m
}

impl StreamHost {
    fn new(tx: mpsc::Sender<Out>) -> Self {
        Self {
            tx,
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// The stream message for a call (`what` as the HTTP path has it).
    fn request(id: String, call: &Call, chain: Option<&str>) -> Result<ToApp, ApiError> {
        let (actor_type, actor_id) = (call.actor_type.clone(), call.actor_id.clone());
        if call.method == Method::DELETE && call.what.is_empty() {
            return Ok(ToApp::DeactivateRequest(
                rt::SubscribeActorEventsResponseDeactivateRequestAlpha1 {
                    id,
                    actor_type,
                    actor_id,
                },
            ));
        }
        let path = call.what.split('?').next().unwrap_or_default();
        let decode = crate::components::metadata::percent_decode;
        let fired = || -> Value { serde_json::from_slice(&call.body).unwrap_or(Value::Null) };
        if let Some(name) = path.strip_prefix("method/remind/") {
            let body = fired();
            return Ok(ToApp::ReminderRequest(
                rt::SubscribeActorEventsResponseReminderRequestAlpha1 {
                    id,
                    actor_type,
                    actor_id,
                    name: decode(name),
                    due_time: text(&body["dueTime"]),
                    period: text(&body["period"]),
                    data: payload(&body["data"]),
                    metadata: metadata(&call.headers, chain),
                },
            ));
        }
        if let Some(name) = path.strip_prefix("method/timer/") {
            let body = fired();
            return Ok(ToApp::TimerRequest(
                rt::SubscribeActorEventsResponseTimerRequestAlpha1 {
                    id,
                    actor_type,
                    actor_id,
                    name: decode(name),
                    due_time: text(&body["dueTime"]),
                    period: text(&body["period"]),
                    callback: text(&body["callback"]),
                    data: payload(&body["data"]),
                    metadata: metadata(&call.headers, chain),
                },
            ));
        }
        let Some(method) = path.strip_prefix("method/") else {
            return Err(invalid(format!("not an actor call: {}", call.what)));
        };
        Ok(ToApp::InvokeRequest(
            rt::SubscribeActorEventsResponseInvokeRequestAlpha1 {
                id,
                actor_type,
                actor_id,
                method: decode(method),
                data: call.body.to_vec(),
                metadata: metadata(&call.headers, chain),
            },
        ))
    }

    /// Sends a call to the app and waits for its answer.
    pub async fn call(&self, call: &Call, chain: Option<&str>) -> Result<Answer, ApiError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let message = Self::request(id.clone(), call, chain)?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(id.clone(), tx);
        let _waiting = Waiting { host: self, id };
        self.tx
            .send(Ok(rt::SubscribeActorEventsResponseAlpha1 {
                response_type: Some(message),
            }))
            .await
            .map_err(|_| gone())?;
        let reply = rx.await.map_err(|_| gone())?;
        answer(call, reply)
    }

    /// Hands an answer from the app to the call waiting for it.
    fn answered(&self, reply: FromApp) {
        let id = match &reply {
            FromApp::InvokeResponse(r) => &r.id,
            FromApp::ReminderResponse(r) | FromApp::TimerResponse(r) => &r.id,
            FromApp::DeactivateResponse(r) => &r.id,
            FromApp::RequestFailed(r) => &r.id,
            FromApp::InitialRequest(_) => {
                tracing::warn!("actors: an actor host sent a second registration; ignored");
                return;
            }
        };
        let waiter = self.waiting.lock().expect("waiting lock").remove(id);
        match waiter {
            Some(w) => {
                let _ = w.send(reply);
            }
            None => {
                tracing::debug!(id = %id, "actors: an answer for no waiting call (it timed out)")
            }
        }
    }
}

/// The app's answer as the HTTP callback's answer would be.
fn answer(call: &Call, reply: FromApp) -> Result<Answer, ApiError> {
    let mut headers = HeaderMap::new();
    let body = match reply {
        FromApp::InvokeResponse(r) => {
            for (k, v) in &r.metadata {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    headers.insert(k, v);
                }
            }
            if r.error {
                headers.insert(ERROR_HEADER, HeaderValue::from_static("true"));
            }
            bytes::Bytes::from(r.data)
        }
        FromApp::ReminderResponse(r) | FromApp::TimerResponse(r) => {
            if r.cancel {
                headers.insert(CANCEL_HEADER, HeaderValue::from_static("true"));
            }
            bytes::Bytes::new()
        }
        FromApp::DeactivateResponse(_) => bytes::Bytes::new(),
        FromApp::RequestFailed(f) => {
            let message = if f.code == Code::NotFound as u32 {
                format!(
                    "error invoke actor method: actor method not found: actors/{}/{}/{}: {}",
                    call.actor_type, call.actor_id, call.what, f.message
                )
            } else {
                format!(
                    "error invoke actor method: error from actor service: ({}) {}",
                    Code::from(f.code as i32),
                    f.message
                )
            };
            return Err(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                message,
            ));
        }
        FromApp::InitialRequest(_) => return Err(gone()),
    };
    Ok(Answer {
        status: StatusCode::OK,
        headers,
        body,
    })
}

/// The registration as `/dapr/config` would have said it.
fn config_of(init: &rt::SubscribeActorEventsRequestInitialAlpha1) -> Result<ActorConfig, String> {
    fn ms(d: &Option<prost_types::Duration>, what: &str) -> Result<Value, String> {
        match d {
            None => Ok(Value::Null),
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                Err(format!("{what} is negative; give a positive duration"))
            }
            Some(d) => {
                let ms = (d.seconds as u128) * 1000 + (d.nanos as u128) / 1_000_000;
                Ok(Value::String(format!("{ms}ms")))
            }
        }
    }
    fn reentrancy(r: &Option<rt::ActorReentrancyConfig>) -> Value {
        match r {
            None => Value::Null,
            Some(r) => {
                json!({"enabled": r.enabled, "maxStackDepth": r.max_stack_depth})
            }
        }
    }
    let mut per_type = Vec::new();
    for e in &init.entities_config {
        per_type.push(json!({
            "entities": e.entities,
            "actorIdleTimeout": ms(&e.actor_idle_timeout, "entities_config.actor_idle_timeout")?,
            "drainOngoingCallTimeout": ms(&e.drain_ongoing_call_timeout, "entities_config.drain_ongoing_call_timeout")?,
            "drainRebalancedActors": e.drain_rebalanced_actors,
            "reentrancy": reentrancy(&e.reentrancy),
        }));
    }
    let mut o = json!({
        "entities": init.entities,
        "actorIdleTimeout": ms(&init.actor_idle_timeout, "actor_idle_timeout")?,
        "drainOngoingCallTimeout": ms(&init.drain_ongoing_call_timeout, "drain_ongoing_call_timeout")?,
        "reentrancy": reentrancy(&init.reentrancy),
        "entitiesConfig": per_type,
    });
    if let Some(b) = init.drain_rebalanced_actors {
        o["drainRebalancedActors"] = Value::Bool(b);
    }
    // `null` where a per-type field was left out: not an override.
    if let Some(Value::Array(per)) = o.get_mut("entitiesConfig") {
        for e in per {
            if let Value::Object(m) = e {
                m.retain(|_, v| !v.is_null());
            }
        }
    }
    let mut c = ActorConfig::parse(&o)?;
    for t in c.per_type.keys() {
        if !c.entities.contains(t) {
            c.entities.push(t.clone());
        }
    }
    c.entities.sort();
    c.entities.dedup();
    Ok(c)
}

impl Actors {
    /// Takes an app's stream as the way to its actors, with the types and
    /// settings it registered; returns once the types are in the table.
    async fn attach(self: &Arc<Self>, host: Arc<StreamHost>, config: ActorConfig) {
        {
            // The list and the config change together (a stream closing
            // meanwhile sees both or neither).
            let mut streams = self.streams.lock().expect("streams lock");
            streams.push(host);
            self.config.store(Arc::new(config));
            self.via_stream.store(true, Ordering::Release);
        }
        self.beat().await;
    }

    /// Lets a closed stream go: when it was the app's last, its actor
    /// types leave the table and its actors are let go.
    async fn detach(self: &Arc<Self>, host: &Arc<StreamHost>) {
        let last = {
            let mut streams = self.streams.lock().expect("streams lock");
            streams.retain(|h| !Arc::ptr_eq(h, host));
            let last = streams.is_empty();
            if last {
                let mut c = (*self.config()).clone();
                c.entities.clear();
                self.config.store(Arc::new(c));
            }
            last
        };
        // Its calls waiting for answers fail now: the app is gone from this
        // stream (daprd fails them too).
        host.waiting.lock().expect("waiting lock").clear();
        if last {
            tracing::info!(
                "actors: the app's actor host stream closed; its actor types are unregistered"
            );
            self.beat().await;
        }
    }
}

/// Serves one `SubscribeActorEventsAlpha1` stream.
pub async fn subscribe(
    rt: Arc<Runtime>,
    mut inbound: Streaming<rt::SubscribeActorEventsRequestAlpha1>,
) -> Result<ReceiverStream<Out>, ApiError> {
    let first = inbound
        .message()
        .await
        .map_err(|s| invalid(format!("reading the first message: {}", s.message())))?;
    let Some(FromApp::InitialRequest(init)) = first.and_then(|m| m.request_type) else {
        return Err(invalid(
            "the first message of the stream must be initial_request (SubscribeActorEventsRequestInitialAlpha1) naming the actor types",
        ));
    };
    let config = config_of(&init).map_err(|e| invalid(format!("the actor registration: {e}")))?;
    if config.entities.is_empty() {
        return Err(invalid(
            "the actor registration names no actor types: list them in entities",
        ));
    }
    if rt.app.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::FailedPrecondition,
            "ERR_ACTOR_NO_APP_CHANNEL",
            "actor callback streaming requires a gRPC app channel: run the sidecar with --app-port and --app-protocol grpc (the SDK's ActorGrpcHost listens there)",
        ));
    }
    // Waits as the API doors do for the runtime (started once the app
    // listens); a runtime that never comes is this stream's own error.
    let actors = crate::api::http::actors::runtime(&rt).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "ERR_ACTOR_RUNTIME_NOT_FOUND",
            "the actor runtime did not start (is the placement table usable?)",
        )
    })?;
    if !actors.via_stream.load(Ordering::Acquire) && !actors.config().entities.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Code::FailedPrecondition,
            "ERR_ACTOR_RUNTIME_NOT_FOUND",
            "this app already hosts actors over HTTP callbacks (its GET /dapr/config named entities); host them one way",
        ));
    }
    let (tx, rx) = mpsc::channel::<Out>(256);
    let host = Arc::new(StreamHost::new(tx.clone()));
    tracing::info!(types = ?config.entities, "actors: the app hosts actor types over a stream");
    actors.attach(host.clone(), config).await;
    crate::api::jobs::start_reminders(&rt);
    let _ = tx
        .send(Ok(rt::SubscribeActorEventsResponseAlpha1 {
            response_type: Some(ToApp::InitialResponse(
                rt::SubscribeActorEventsResponseInitialAlpha1 {},
            )),
        }))
        .await;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        if let Some(reply) = m.request_type {
                            host.answered(reply);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "actors: the actor host stream ended");
                        break;
                    }
                },
                _ = tx.closed() => break,
            }
        }
        actors.detach(&host).await;
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_registration_reads_as_the_apps_config() {
        let init = rt::SubscribeActorEventsRequestInitialAlpha1 {
            entities: vec!["Cart".into()],
            actor_idle_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 500_000_000,
            }),
            drain_ongoing_call_timeout: None,
            drain_rebalanced_actors: Some(false),
            reentrancy: Some(rt::ActorReentrancyConfig {
                enabled: true,
                max_stack_depth: Some(4),
            }),
            entities_config: vec![rt::ActorEntityConfig {
                entities: vec!["Order".into()],
                actor_idle_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        };
        let c = config_of(&init).unwrap();
        assert_eq!(c.entities, ["Cart", "Order"]);
        assert_eq!(c.of("Cart").idle_timeout, Duration::from_millis(5_500));
        assert!(!c.of("Cart").drain_rebalanced);
        assert_eq!(c.of("Cart").reentrancy.max_depth, 4);
        assert_eq!(c.of("Order").idle_timeout, Duration::from_secs(1));
        assert_eq!(c.of("Order").reentrancy.max_depth, 4);

        let mut bad = init.clone();
        bad.actor_idle_timeout = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        assert!(config_of(&bad).unwrap_err().contains("negative"));
        let mut bad = init;
        bad.reentrancy = Some(rt::ActorReentrancyConfig {
            enabled: true,
            max_stack_depth: Some(0),
        });
        assert!(config_of(&bad).unwrap_err().contains("maxStackDepth"));
    }

    #[test]
    fn calls_become_the_streams_messages() {
        let call = |what: &str, method: Method, body: &str| Call {
            actor_type: "Cart".into(),
            actor_id: "a/b".into(),
            what: what.into(),
            method,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        let m = StreamHost::request(
            "1".into(),
            &call("method/add%20item?x=1", Method::PUT, "{\"n\":1}"),
            Some("chain"),
        )
        .unwrap();
        let ToApp::InvokeRequest(r) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (r.method.as_str(), r.actor_id.as_str()),
            ("add item", "a/b")
        );
        assert_eq!(r.metadata[REENTRANCY_HEADER], "chain");
        let m = StreamHost::request(
            "2".into(),
            &call(
                "method/remind/r1",
                Method::PUT,
                r#"{"data":{"k":[1,2]},"dueTime":"1s","period":"2s"}"#,
            ),
            None,
        )
        .unwrap();
        let ToApp::ReminderRequest(r) = m else {
            panic!("{m:?}")
        };
        let any = r.data.unwrap();
        assert_eq!(any.type_url, BYTES_VALUE);
        let raw = <Vec<u8> as Message>::decode(any.value.as_slice()).unwrap();
        assert_eq!(raw, br#"{"k":[1,2]}"#);
        assert_eq!((r.due_time.as_str(), r.period.as_str()), ("1s", "2s"));
        let m = StreamHost::request(
            "3".into(),
            &call(
                "method/timer/t",
                Method::PUT,
                r#"{"callback":"tick","data":null}"#,
            ),
            None,
        )
        .unwrap();
        let ToApp::TimerRequest(r) = m else {
            panic!("{m:?}")
        };
        assert!(r.data.is_none());
        assert_eq!(r.callback, "tick");
        let m = StreamHost::request("4".into(), &call("", Method::DELETE, ""), None).unwrap();
        assert!(matches!(m, ToApp::DeactivateRequest(_)));
        assert!(StreamHost::request("5".into(), &call("state/x", Method::PUT, ""), None).is_err());
    }

    #[test]
    fn answers_read_as_the_http_callbacks_would() {
        let call = Call {
            actor_type: "Cart".into(),
            actor_id: "1".into(),
            what: "method/m".into(),
            method: Method::PUT,
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let a = answer(
            &call,
            FromApp::InvokeResponse(rt::SubscribeActorEventsRequestInvokeResponseAlpha1 {
                id: "1".into(),
                data: b"{}".to_vec(),
                metadata: [("Content-Type".to_string(), "application/json".to_string())].into(),
                error: true,
            }),
        )
        .unwrap();
        assert_eq!(a.headers["content-type"], "application/json");
        assert!(a.headers.contains_key(ERROR_HEADER));
        let a = answer(
            &call,
            FromApp::ReminderResponse(rt::SubscribeActorEventsRequestReminderResponseAlpha1 {
                id: "1".into(),
                cancel: true,
            }),
        )
        .unwrap();
        assert!(a.headers.contains_key(CANCEL_HEADER));
        let e = answer(
            &call,
            FromApp::RequestFailed(rt::SubscribeActorEventsRequestFailedAlpha1 {
                id: "1".into(),
                code: 5,
                message: "no such method".into(),
            }),
        )
        .unwrap_err();
        assert!(
            e.message.contains("actor method not found"),
            "{}",
            e.message
        );
    }
}
