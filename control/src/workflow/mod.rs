//! Durable workflows: the engine behind the durabletask protocol the Dapr
//! workflow SDKs speak (`TaskHubSidecarService`, `service.rs`) and behind
//! Dapr's own workflow API.
//!
//! Each instance is an actor of the sidecar's own type
//! `dapr.internal.<ns>.<app>.workflow` (daprd's name): the actor placement
//! decides which host runs it, calls for it run one at a time there, and
//! its timers and recovery wake-ups are reminders. Its state is in the
//! actor state store (`store.rs`): metadata, one key per history event,
//! one per inbox event. A turn is: the inbox (events not yet seen by the
//! workflow) handed to a worker with the history; the worker's actions
//! checked against the history (`history::apply`) and committed — the new
//! events, the actions' events, the inbox keys it consumed, the metadata —
//! in one transaction; only then are activities handed out, timers set
//! and children started. Anything acknowledged to a caller (a start, an
//! event, an activity's result) is in the store first.
//!
//! Activities run at least once (one handed to a worker that vanishes is
//! handed out again) and their results are recorded once (a second answer
//! for a settled id is dropped). After a crash, an instance is loaded on
//! its next call or by its `wake` reminder (every 10 s while it runs):
//! loading hands out again what its history still waits for.

pub mod history;
pub mod hub;
pub mod service;
pub mod store;

use crate::actors::{Actors, Answer, Call, Internal};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use dt::history_event::EventType as E;
use futures_util::future::BoxFuture;
use history::{Meta, Parent, is_terminal};
use http::{HeaderMap, Method, StatusCode};
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tandem_proto::durabletask as dt;
use tandem_stateful::scheduler::now_ms;

/// How often a running instance's `wake` reminder looks at it.
const WAKE: Duration = Duration::from_secs(10);
/// How long a finished instance stays in memory (for the caller that
/// waits for it) before its actor is let go.
const LINGER: Duration = Duration::from_secs(5);

pub fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    let grpc = match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::CONFLICT => tonic::Code::AlreadyExists,
        StatusCode::PRECONDITION_FAILED => tonic::Code::FailedPrecondition,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    ApiError::new(status, grpc, code, message)
}

pub fn not_found(id: &str) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "ERR_INSTANCE_ID_NOT_FOUND",
        format!(
            "unable to find workflow with the provided instance ID: {id} (no such instance exists)"
        ),
    )
}

struct Turn {
    token: String,
    new_events: Vec<dt::HistoryEvent>,
    /// How many inbox events it carries (the first ones).
    taken: usize,
}

#[derive(Default)]
struct Inst {
    loaded: bool,
    /// Its actor is to be let go soon (it is not running).
    lingering: bool,
    /// Its `wake` reminder is stored (as far as this host knows).
    wake: bool,
    exists: bool,
    meta: Meta,
    history: Vec<dt::HistoryEvent>,
    inbox: Vec<dt::HistoryEvent>,
    turn: Option<Turn>,
}

/// The sidecar's workflow engine.
pub struct Workflows {
    rt: Weak<Runtime>,
    this: Weak<Workflows>,
    pub hub: hub::Hub,
    /// `dapr.internal.<ns>.<app>.workflow`.
    pub actor_type: String,
    /// `dapr.internal.<ns>.<app>.activity`: activities other apps'
    /// workflows call on this app.
    activity_type: String,
    app_id: String,
    namespace: String,
    instances: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Inst>>>>,
    /// Callers waiting for an instance to change, by instance.
    watchers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    reminders: AtomicBool,
    /// Its actor types are in the placement table (from the first use on:
    /// a sidecar whose app never runs workflows never hosts them).
    hosted: tokio::sync::OnceCell<()>,
}

/// What an instance operation asks (the body of its actor call).
enum Op {
    Create,
    Event(u64),
    Terminate,
    Get,
    History,
    Purge,
    Complete,
    Rerun,
    Adopt,
    Remind(String),
    Unload,
}

impl Op {
    fn parse(call: &Call) -> Result<Self, ApiError> {
        if call.method == Method::DELETE {
            return Ok(Op::Unload);
        }
        let what = call.what.strip_prefix("method/").unwrap_or(&call.what);
        Ok(match what {
            "create" => Op::Create,
            "terminate" => Op::Terminate,
            "get" => Op::Get,
            "history" => Op::History,
            "purge" => Op::Purge,
            "complete" => Op::Complete,
            "rerun" => Op::Rerun,
            "adopt" => Op::Adopt,
            _ => {
                if let Some(g) = what.strip_prefix("event/") {
                    Op::Event(g.parse().unwrap_or(u64::MAX))
                } else if let Some(r) = what.strip_prefix("remind/") {
                    Op::Remind(r.to_string())
                } else {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "ERR_ACTOR_INVOKE_METHOD",
                        format!("workflow actor: no such operation `{what}`"),
                    ));
                }
            }
        })
    }
}

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, ApiError> {
    M::decode(body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            format!("workflow actor: the request is not a valid protobuf message: {e}"),
        )
    })
}

fn ok(body: Vec<u8>) -> Answer {
    Answer {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(body),
    }
}

pub fn status_name(status: i32) -> &'static str {
    match status {
        history::RUNNING => "RUNNING",
        history::COMPLETED => "COMPLETED",
        history::CONTINUED_AS_NEW => "CONTINUED_AS_NEW",
        history::FAILED => "FAILED",
        history::CANCELED => "CANCELED",
        history::TERMINATED => "TERMINATED",
        history::PENDING => "PENDING",
        history::SUSPENDED => "SUSPENDED",
        _ => "UNKNOWN",
    }
}

impl Workflows {
    /// Makes the sidecar's engine beside its actor runtime; its actor
    /// types are hosted and its reminders fire from the first use on.
    pub fn launch(rt: &Arc<Runtime>) {
        let namespace = rt
            .options
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let actor_type = format!("dapr.internal.{namespace}.{}.workflow", rt.app_id());
        let wf = Arc::new_cyclic(|this| Workflows {
            rt: Arc::downgrade(rt),
            this: this.clone(),
            hub: hub::Hub::default(),
            actor_type: actor_type.clone(),
            activity_type: format!("dapr.internal.{namespace}.{}.activity", rt.app_id()),
            app_id: rt.app_id().to_string(),
            namespace,
            instances: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            reminders: AtomicBool::new(false),
            hosted: tokio::sync::OnceCell::new(),
        });
        let _ = rt.workflows.set(wf);
    }

    /// The engine, once the actor runtime is up (a call that comes while
    /// the sidecar starts waits for it, as actor calls do).
    pub async fn of(rt: &Runtime) -> Result<Arc<Workflows>, ApiError> {
        crate::api::http::actors::runtime(rt).await?;
        let wf = rt.workflows.get().cloned().ok_or_else(|| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_RUNTIME_NOT_FOUND",
                "the workflow engine is not running (the actor runtime could not start)",
            )
        })?;
        wf.hosted
            .get_or_init(|| async {
                if let Ok(actors) = wf.actors() {
                    let hook: Arc<dyn Internal> = Arc::new(Hook(Arc::downgrade(&wf)));
                    actors
                        .host_internal(&[wf.actor_type.as_str(), wf.activity_type.as_str()], hook)
                        .await;
                }
            })
            .await;
        if !wf.reminders.swap(true, Ordering::AcqRel)
            && let Some(rt) = wf.rt.upgrade()
        {
            // Timers and recovery wake-ups are reminders.
            crate::api::jobs::start_reminders(&rt);
        }
        Ok(wf)
    }

    fn runtime(&self) -> Result<Arc<Runtime>, ApiError> {
        self.rt.upgrade().ok_or_else(|| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_ACTOR_RUNTIME_CLOSED",
                "the sidecar is stopping",
            )
        })
    }

    fn actors(&self) -> Result<Arc<Actors>, ApiError> {
        self.runtime()?.actors.get().cloned().ok_or_else(|| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_RUNTIME_NOT_FOUND",
                "the actor runtime is not initialized",
            )
        })
    }

    /// Sends an operation to an instance wherever it runs.
    async fn send(&self, id: &str, what: String, body: Vec<u8>) -> Result<Bytes, ApiError> {
        self.send_to(&self.actor_type, id, what, body).await
    }

    /// The workflow actor type of `app` (this app's when empty).
    fn workflow_type(&self, app: &str) -> String {
        if app.is_empty() || app == self.app_id {
            self.actor_type.clone()
        } else {
            format!("dapr.internal.{}.{app}.workflow", self.namespace)
        }
    }

    /// The app a router sends work to, when it is another app.
    fn remote_app(&self, router: Option<&dt::TaskRouter>) -> Option<String> {
        router
            .and_then(|r| r.target_app_id.clone())
            .filter(|a| !a.is_empty() && *a != self.app_id)
    }

    /// Sends an operation to an actor of `actor_type` wherever it runs.
    async fn send_to(
        &self,
        actor_type: &str,
        id: &str,
        what: String,
        body: Vec<u8>,
    ) -> Result<Bytes, ApiError> {
        let call = Call {
            actor_type: actor_type.to_string(),
            actor_id: id.to_string(),
            what,
            method: Method::PUT,
            headers: HeaderMap::new(),
            body: Bytes::from(body),
        };
        Ok(self.actors()?.call(call, 0).await?.body)
    }

    /// Counts an operation in `dapr_runtime_workflow_operation_*`.
    fn measured<T>(&self, op: &str, since: std::time::Instant, r: &Result<T, ApiError>) {
        if let Some(rt) = self.rt.upgrade() {
            rt.metrics
                .workflow_operation(&self.namespace, op, r.is_ok(), since.elapsed());
        }
    }

    // ---- the API's operations (any host) --------------------------------

    /// Starts an instance; `caller` is the trace context the request came
    /// with (its `create_orchestration||<name>` span goes under it, and the
    /// workflow's spans under that).
    pub async fn start(
        &self,
        mut req: dt::CreateInstanceRequest,
        caller: Option<String>,
    ) -> Result<String, ApiError> {
        let since = std::time::Instant::now();
        let tracer = self.runtime()?.tracer();
        let parent = req
            .parent_trace_context
            .as_ref()
            .map(|t| t.trace_parent.clone())
            .or(caller)
            .as_deref()
            .and_then(tandem_proxy::trace::Context::parse);
        let name = req.name.clone();
        let mut span = tracer.start(
            || format!("create_orchestration||{name}"),
            tandem_proxy::trace::Kind::Client,
            parent,
        );
        span.attribute("dapr.workflow.instance_id", req.instance_id.as_str());
        span.attribute("dapr.workflow.name", req.name.as_str());
        req.parent_trace_context = Some(dt::TraceContext {
            trace_parent: span.context.traceparent(),
            ..Default::default()
        });
        let r = self.start_traced(req).await;
        tracer.end(span, r.is_ok());
        self.measured("create_workflow", since, &r);
        r
    }

    async fn start_traced(&self, req: dt::CreateInstanceRequest) -> Result<String, ApiError> {
        let id = req.instance_id.clone();
        let started = dt::HistoryEvent {
            event_id: -1,
            timestamp: Some(history::ts(now_ms())),
            event_type: Some(E::ExecutionStarted(dt::ExecutionStartedEvent {
                name: req.name,
                version: req.version,
                input: req.input,
                workflow_instance: Some(dt::WorkflowInstance {
                    instance_id: id.clone(),
                    execution_id: Some(
                        req.execution_id
                            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                    ),
                }),
                parent_instance: None,
                scheduled_start_timestamp: req.scheduled_start_timestamp,
                parent_trace_context: req.parent_trace_context,
                workflow_span_id: None,
                tags: req.tags,
            })),
            // The app that runs it (the SDKs read their app id from it).
            router: Some(dt::TaskRouter {
                source_app_id: self.app_id.clone(),
                target_app_id: Some(self.app_id.clone()),
                target_app_namespace: None,
            }),
        };
        self.send(&id, "method/create".into(), started.encode_to_vec())
            .await?;
        Ok(id)
    }

    pub async fn get(
        &self,
        id: &str,
        payloads: bool,
    ) -> Result<Option<dt::WorkflowState>, ApiError> {
        let since = std::time::Instant::now();
        let body = self.send(id, "method/get".into(), Vec::new()).await;
        self.measured("get_workflow", since, &body);
        let body = body?;
        let r: dt::GetInstanceResponse = decode(&body)?;
        Ok(r.exists.then(|| {
            let mut s = r.workflow_state.unwrap_or_default();
            if !payloads {
                s.input = None;
                s.output = None;
                s.custom_status = None;
                s.failure_details = None;
            }
            s
        }))
    }

    pub async fn history(&self, id: &str) -> Result<Vec<dt::HistoryEvent>, ApiError> {
        let body = self.send(id, "method/history".into(), Vec::new()).await?;
        let r: dt::GetInstanceHistoryResponse = decode(&body)?;
        Ok(r.events)
    }

    /// Waits until `done` holds for the instance (`None` while it does not
    /// exist), checking at each change here and at least every second.
    pub async fn wait(
        &self,
        id: &str,
        payloads: bool,
        done: impl Fn(Option<&dt::WorkflowState>) -> bool,
    ) -> Result<Option<dt::WorkflowState>, ApiError> {
        loop {
            let notify = self
                .watchers
                .lock()
                .expect("watchers lock")
                .entry(id.to_string())
                .or_default()
                .clone();
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let s = self.get(id, payloads).await?;
            if done(s.as_ref()) {
                return Ok(s);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    }

    fn changed(&self, id: &str) {
        if let Some(n) = self.watchers.lock().expect("watchers lock").get(id) {
            n.notify_waiters();
        }
    }

    /// Sends an event-like operation, counted as `add_event`.
    async fn add_event(&self, id: &str, what: &str, e: dt::HistoryEvent) -> Result<(), ApiError> {
        let since = std::time::Instant::now();
        let r = self
            .send(id, what.into(), e.encode_to_vec())
            .await
            .map(drop);
        self.measured("add_event", since, &r);
        r
    }

    pub async fn raise(&self, id: &str, name: &str, input: Option<String>) -> Result<(), ApiError> {
        let e = history::event(
            -1,
            now_ms(),
            E::EventRaised(dt::EventRaisedEvent {
                name: name.into(),
                input,
            }),
        );
        self.add_event(id, "method/event/raise", e).await
    }

    pub async fn suspend(&self, id: &str, reason: Option<String>) -> Result<(), ApiError> {
        let e = E::ExecutionSuspended(dt::ExecutionSuspendedEvent { input: reason });
        self.control(id, e).await
    }

    pub async fn resume(&self, id: &str, reason: Option<String>) -> Result<(), ApiError> {
        let e = E::ExecutionResumed(dt::ExecutionResumedEvent { input: reason });
        self.control(id, e).await
    }

    async fn control(&self, id: &str, e: E) -> Result<(), ApiError> {
        let e = history::event(-1, now_ms(), e);
        self.add_event(id, "method/event/control", e).await
    }

    pub async fn terminate(
        &self,
        id: &str,
        output: Option<String>,
        recurse: bool,
    ) -> Result<(), ApiError> {
        let e = history::event(
            -1,
            now_ms(),
            E::ExecutionTerminated(dt::ExecutionTerminatedEvent {
                input: output,
                recurse,
            }),
        );
        self.add_event(id, "method/terminate", e).await
    }

    /// Purges a finished instance (and, `recursive`, its children): the
    /// number of instances removed.
    /// Starts a new instance from a finished one's history up to an
    /// event (an activity, a timer or a child it created): what came before
    /// is replayed, that event runs again (an activity or child with new
    /// input when `overwriteInput`). The new instance's id.
    pub async fn rerun(
        &self,
        mut req: dt::RerunWorkflowFromEventRequest,
    ) -> Result<String, ApiError> {
        let new_id = req
            .new_instance_id
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        req.new_instance_id = Some(new_id.clone());
        let source = req.source_instance_id.clone();
        self.send(&source, "method/rerun".into(), req.encode_to_vec())
            .await?;
        Ok(new_id)
    }

    pub async fn purge(&self, id: &str, recursive: bool) -> Result<i32, ApiError> {
        let since = std::time::Instant::now();
        let body = self
            .send(id, "method/purge".into(), vec![u8::from(recursive)])
            .await;
        self.measured("purge_workflow", since, &body);
        let r: dt::PurgeInstancesResponse = decode(&body?)?;
        Ok(r.deleted_instance_count)
    }

    /// A worker answered an orchestration work item.
    pub async fn turn_done(&self, resp: dt::WorkflowResponse) -> Result<(), ApiError> {
        let item = if resp.completion_token.is_empty() {
            self.hub.complete_untokened(&resp.instance_id, None)
        } else {
            self.hub.complete(&resp.completion_token)
        };
        let Some(item) = item else {
            tracing::debug!(instance = %resp.instance_id, "workflows: an answer to a work item no longer in flight was dropped");
            return Ok(());
        };
        let hub::Kind::Turn { instance } = &item.kind else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                "the completion token belongs to an activity, not an orchestration",
            ));
        };
        if !resp.instance_id.is_empty() && &resp.instance_id != instance {
            // Handed out again: the instance fails rather than run on a
            // history it does not have.
            tracing::warn!(instance = %instance, answered = %resp.instance_id, "workflows: a worker answered for another instance than the work item's");
        }
        let mut resp = resp;
        resp.instance_id = instance.clone();
        resp.completion_token = item.token.clone();
        self.send(instance, "method/complete".into(), resp.encode_to_vec())
            .await
            .map(drop)
    }

    /// A worker answered an activity work item.
    pub async fn activity_done(&self, resp: dt::ActivityResponse) -> Result<(), ApiError> {
        let item = if resp.completion_token.is_empty() {
            self.hub
                .complete_untokened(&resp.instance_id, Some(resp.task_id))
        } else {
            self.hub.complete(&resp.completion_token)
        };
        let Some(item) = item else {
            tracing::debug!(instance = %resp.instance_id, task = resp.task_id, "workflows: an activity answer for a work item no longer in flight was dropped");
            return Ok(());
        };
        let hub::Kind::Activity {
            instance,
            task,
            generation,
            owner,
        } = &item.kind
        else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                "the completion token belongs to an orchestration, not an activity",
            ));
        };
        let (execution, name, trace) = match &item.work.request {
            Some(dt::work_item::Request::ActivityRequest(a)) => (
                a.task_execution_id.clone(),
                a.name.clone(),
                a.parent_trace_context
                    .as_ref()
                    .map(|t| t.trace_parent.clone()),
            ),
            _ => Default::default(),
        };
        let ok = resp.failure_details.is_none();
        if let Ok(rt) = self.runtime() {
            let ran = item.since.elapsed().unwrap_or_default();
            rt.metrics
                .workflow_activity(&self.namespace, &name, ok, ran);
            let tracer = rt.tracer();
            if tracer.is_on() {
                let parent = trace
                    .as_deref()
                    .and_then(tandem_proxy::trace::Context::parse);
                let mut span = tracer.start_at(
                    || format!("activity||{name}"),
                    tandem_proxy::trace::Kind::Client,
                    parent,
                    item.since,
                );
                span.attribute("dapr.workflow.instance_id", instance.as_str());
                span.attribute("dapr.workflow.activity_name", name.as_str());
                span.attribute("dapr.workflow.task_id", i64::from(*task));
                tracer.end(span, ok);
            }
        }
        let kind = match resp.failure_details {
            Some(f) => E::TaskFailed(dt::TaskFailedEvent {
                task_scheduled_id: *task,
                failure_details: Some(f),
                task_execution_id: execution,
            }),
            None => E::TaskCompleted(dt::TaskCompletedEvent {
                task_scheduled_id: *task,
                result: resp.result,
                task_execution_id: execution,
            }),
        };
        let e = history::event(-1, now_ms(), kind);
        let sent = self
            .send_to(
                owner,
                instance,
                format!("method/event/{generation}"),
                e.encode_to_vec(),
            )
            .await;
        if let Err(e) = &sent {
            // Not recorded: hand it out again so the result is not lost.
            tracing::warn!(instance = %instance, task, error = %e.message, "workflows: an activity's result could not be recorded; the activity is handed out again");
            self.hub.dispatch(hub::Item {
                token: uuid::Uuid::new_v4().to_string(),
                ..item.clone()
            });
        }
        sent.map(drop)
    }

    // ---- the instance actor (its host) ------------------------------------

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Inst>> {
        self.instances
            .lock()
            .expect("instances lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    async fn handle(&self, call: &Call) -> Result<Answer, ApiError> {
        if call.actor_type == self.activity_type {
            return self.handle_activity(call);
        }
        let op = Op::parse(call)?;
        let id = call.actor_id.as_str();
        if let Op::Unload = op {
            let slot = self.instances.lock().expect("instances lock").remove(id);
            if let Some(slot) = slot {
                let _g = slot.lock().await;
            }
            // Its activities stay out (their results reach it wherever it
            // is loaded next); a turn is handed out again by that load.
            self.hub.forget_turn(id);
            self.watchers.lock().expect("watchers lock").remove(id);
            return Ok(ok(Vec::new()));
        }
        let rt = self.runtime()?;
        let slot = self.slot(id);
        let mut inst = slot.lock().await;
        if !inst.loaded {
            self.load(&rt, id, &mut inst).await?;
        }
        let out = match op {
            Op::Create => self.create(&rt, id, &mut inst, decode(&call.body)?).await,
            Op::Event(generation) => {
                let e: dt::HistoryEvent = decode(&call.body)?;
                self.deliver(
                    &rt,
                    id,
                    &mut inst,
                    e,
                    generation,
                    call.what.ends_with("/raise"),
                )
                .await
            }
            Op::Terminate => {
                self.terminate_here(&rt, id, &mut inst, decode(&call.body)?)
                    .await
            }
            Op::Get => Ok(self.state_of(id, &inst).encode_to_vec()),
            Op::History => {
                if !inst.exists {
                    return Err(not_found(id));
                }
                Ok(dt::GetInstanceHistoryResponse {
                    events: inst.history.clone(),
                }
                .encode_to_vec())
            }
            Op::Purge => {
                let recursive = call.body.first() == Some(&1);
                self.purge_here(&rt, id, &mut inst, recursive).await
            }
            Op::Complete => self.complete(&rt, id, &mut inst, decode(&call.body)?).await,
            Op::Rerun => self.rerun_here(id, &inst, decode(&call.body)?).await,
            Op::Adopt => self.adopt(&rt, id, &mut inst, decode(&call.body)?).await,
            Op::Remind(name) => self.remind(&rt, id, &mut inst, &name).await,
            Op::Unload => unreachable!("handled above"),
        };
        // Not running here (finished, purged, never was): let go soon, so
        // reads of finished or unknown ids do not pile up activations.
        if !inst.lingering && (!inst.exists || is_terminal(inst.meta.status)) {
            inst.lingering = true;
            self.let_go_later(id);
        }
        out.map(ok)
    }

    /// An activity another app's workflow calls on this app (actor id
    /// `<instance>::<task>::<generation>`, `method/run/<app>`): handed to
    /// this app's workers unless they hold it already; its result goes
    /// back to that app's instance.
    fn handle_activity(&self, call: &Call) -> Result<Answer, ApiError> {
        if call.method == Method::DELETE {
            return Ok(ok(Vec::new()));
        }
        let Some(app) = call.what.strip_prefix("method/run/") else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_ACTOR_INVOKE_METHOD",
                format!("activity actor: no such operation `{}`", call.what),
            ));
        };
        let a: dt::ActivityRequest = decode(&call.body)?;
        let generation = call
            .actor_id
            .rsplit("::")
            .next()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        let instance = a
            .workflow_instance
            .as_ref()
            .map(|w| w.instance_id.clone())
            .unwrap_or_default();
        let kind = hub::Kind::Activity {
            instance,
            task: a.task_id,
            generation,
            owner: self.workflow_type(app),
        };
        if !self.hub.holds(&kind) {
            self.hub.dispatch(hub::Item {
                token: uuid::Uuid::new_v4().to_string(),
                kind,
                work: Box::new(dt::WorkItem {
                    request: Some(dt::work_item::Request::ActivityRequest(a)),
                    completion_token: String::new(),
                }),
                since: std::time::SystemTime::now(),
            });
        }
        let me = self.this.clone();
        let (actor_type, id) = (call.actor_type.clone(), call.actor_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            if let Some(me) = me.upgrade()
                && let Ok(a) = me.actors()
            {
                a.deactivate(&(actor_type, id)).await;
            }
        });
        Ok(ok(Vec::new()))
    }

    /// Lets the instance's actor go after `LINGER` (a caller waiting for
    /// it to finish reads it meanwhile); if it runs again by then, its
    /// next call loads it again.
    fn let_go_later(&self, id: &str) {
        let me = self.this.clone();
        let id = id.to_string();
        let actor_type = self.actor_type.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let Some(me) = me.upgrade() else { return };
            let running = {
                let slot = me
                    .instances
                    .lock()
                    .expect("instances lock")
                    .get(&id)
                    .cloned();
                match slot {
                    Some(slot) => {
                        let mut inst = slot.lock().await;
                        inst.lingering = false;
                        inst.exists && !is_terminal(inst.meta.status)
                    }
                    None => return,
                }
            };
            if !running && let Ok(a) = me.actors() {
                a.deactivate(&(actor_type, id)).await;
            }
        });
    }

    async fn load(&self, rt: &Arc<Runtime>, id: &str, inst: &mut Inst) -> Result<(), ApiError> {
        match store::load(rt, &self.actor_type, id).await? {
            None => {
                *inst = Inst {
                    loaded: true,
                    ..Inst::default()
                };
            }
            Some(s) => {
                *inst = Inst {
                    loaded: true,
                    exists: true,
                    meta: s.meta,
                    history: s.history,
                    inbox: s.inbox,
                    ..Inst::default()
                };
                self.recover(rt, id, inst).await;
            }
        }
        Ok(())
    }

    /// After a load: hands out again what the history still waits for.
    async fn recover(&self, rt: &Arc<Runtime>, id: &str, inst: &mut Inst) {
        if is_terminal(inst.meta.status) {
            if inst.meta.parent.is_some() && !inst.meta.parent_notified {
                self.notify_parent(id, inst);
            }
            return;
        }
        let open = history::open_work(&inst.history, &inst.inbox);
        let generation = inst.meta.generation;
        self.hand_out_open(id, &inst.meta, open.activities);
        for (timer, at) in open.timers {
            self.set_timer(rt, id, generation, timer, at).await;
        }
        for (task, c, router) in open.children {
            self.start_child(id, &inst.meta, task, c, router);
        }
        // Whether a wake reminder survived is not known: stored again
        // while there is work out.
        inst.wake = false;
        self.maybe_dispatch(id, inst);
        self.tend_wake(rt, id, inst).await;
    }

    fn state_of(&self, id: &str, inst: &Inst) -> dt::GetInstanceResponse {
        if !inst.exists {
            return dt::GetInstanceResponse::default();
        }
        let m = &inst.meta;
        let status = if m.suspended && !is_terminal(m.status) {
            history::SUSPENDED
        } else {
            m.status
        };
        dt::GetInstanceResponse {
            exists: true,
            workflow_state: Some(dt::WorkflowState {
                instance_id: id.to_string(),
                name: m.name.clone(),
                version: None,
                workflow_status: status,
                scheduled_start_timestamp: m.start_at_ms.map(history::ts),
                created_timestamp: Some(history::ts(m.created_ms)),
                last_updated_timestamp: Some(history::ts(m.updated_ms)),
                input: m.input.clone(),
                output: m.output.clone(),
                custom_status: m.custom_status.clone(),
                failure_details: m.failure.as_ref().map(history::Failure::details),
                execution_id: Some(m.execution_id.clone()),
                completed_timestamp: m.completed_ms.map(history::ts),
                parent_instance_id: m.parent.as_ref().map(|p| p.id.clone()),
                tags: Default::default(),
                parent_app_id: None,
                started_at: None,
            }),
        }
    }

    async fn create(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        started: dt::HistoryEvent,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(E::ExecutionStarted(es)) = &started.event_type else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                "a workflow starts with an executionStarted event",
            ));
        };
        let parent = es.parent_instance.as_ref().map(|p| Parent {
            id: p
                .workflow_instance
                .as_ref()
                .map(|w| w.instance_id.clone())
                .unwrap_or_default(),
            task: p.task_scheduled_id,
            name: p.name.clone().unwrap_or_default(),
            execution: p
                .workflow_instance
                .as_ref()
                .and_then(|w| w.execution_id.clone())
                .unwrap_or_default(),
            app: p.app_id.clone().unwrap_or_default(),
        });
        let mut ops = Vec::new();
        if inst.exists {
            // A child started again by its parent's recovery: the same one.
            if parent.is_some() && inst.meta.parent == parent {
                if is_terminal(inst.meta.status) && !inst.meta.parent_notified {
                    self.notify_parent(id, inst);
                }
                return Ok(Vec::new());
            }
            if !is_terminal(inst.meta.status) {
                return Err(err(
                    StatusCode::CONFLICT,
                    "ERR_INSTANCE_ID_ALREADY_EXISTS",
                    format!(
                        "an active workflow with ID '{id}' already exists (status {}); purge or terminate it, or use another instance id",
                        status_name(inst.meta.status)
                    ),
                ));
            }
            // A finished one is replaced (Dapr's semantics).
            for i in 0..inst.meta.history_len {
                ops.push(store::delete(store::history_key(i)));
            }
            for i in &inst.meta.inbox {
                ops.push(store::delete(store::inbox_key(*i)));
            }
            self.hub.forget(id, &self.actor_type);
        }
        let now = now_ms();
        let generation = inst.meta.generation + 1;
        let meta = Meta {
            name: es.name.clone(),
            generation,
            status: history::PENDING,
            created_ms: now,
            updated_ms: now,
            input: es.input.clone(),
            parent,
            execution_id: es
                .workflow_instance
                .as_ref()
                .and_then(|w| w.execution_id.clone())
                .unwrap_or_default(),
            history_len: 0,
            inbox: vec![0],
            next_inbox: 1,
            trace: es
                .parent_trace_context
                .as_ref()
                .map(|t| t.trace_parent.clone())
                .filter(|t| !t.is_empty()),
            start_at_ms: es
                .scheduled_start_timestamp
                .as_ref()
                .map(history::ms_of)
                .filter(|at| *at > now),
            ..Meta::default()
        };
        ops.push(store::put_event(store::inbox_key(0), &started));
        ops.push(store::put_meta(&meta));
        // The recovery reminder with the write (both before the start is
        // acknowledged): a crash between them must not leave an instance
        // nothing wakes (a reminder without an instance removes itself).
        let wake = async {
            if !inst.wake {
                self.set_reminder(rt, id, "wake", WAKE.as_millis() as i64, Some(WAKE))
                    .await;
            }
        };
        let (_, written) = tokio::join!(wake, store::write(rt, &self.actor_type, id, ops));
        written?;
        *inst = Inst {
            loaded: true,
            exists: true,
            wake: true,
            meta,
            history: Vec::new(),
            inbox: vec![started],
            ..Inst::default()
        };
        if let Some(at) = inst.meta.start_at_ms {
            self.set_reminder(rt, id, "start", at - now, None).await;
        }
        self.maybe_dispatch(id, inst);
        self.changed(id);
        Ok(Vec::new())
    }

    async fn deliver(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        e: dt::HistoryEvent,
        generation: u64,
        raised: bool,
    ) -> Result<Vec<u8>, ApiError> {
        if !inst.exists {
            return Err(not_found(id));
        }
        if is_terminal(inst.meta.status) {
            if raised {
                return Err(err(
                    StatusCode::PRECONDITION_FAILED,
                    "ERR_RAISE_EVENT_WORKFLOW",
                    format!(
                        "workflow instance {id} has already finished ({}); the event was not delivered",
                        status_name(inst.meta.status)
                    ),
                ));
            }
            return Ok(Vec::new());
        }
        // Results for an earlier generation (before a continue-as-new).
        let numbered = matches!(
            e.event_type,
            Some(E::TaskCompleted(_) | E::TaskFailed(_) | E::TimerFired(_))
        );
        if numbered && generation != inst.meta.generation {
            return Ok(Vec::new());
        }
        if history::Settled::of(inst.history.iter().chain(&inst.inbox)).repeats(&e) {
            return Ok(Vec::new());
        }
        match &e.event_type {
            Some(E::ExecutionSuspended(_)) => {
                if inst.meta.suspended {
                    return Ok(Vec::new());
                }
                inst.meta.suspended = true;
            }
            Some(E::ExecutionResumed(_)) => {
                if !inst.meta.suspended {
                    return Ok(Vec::new());
                }
                inst.meta.suspended = false;
            }
            _ => {}
        }
        let seq = inst.meta.next_inbox;
        inst.meta.next_inbox += 1;
        inst.meta.inbox.push(seq);
        inst.meta.updated_ms = now_ms();
        let ops = vec![
            store::put_event(store::inbox_key(seq), &e),
            store::put_meta(&inst.meta),
        ];
        if let Err(err) = store::write(rt, &self.actor_type, id, ops).await {
            // Not kept: the instance reads itself again on its next call.
            inst.loaded = false;
            return Err(err);
        }
        let control = matches!(
            e.event_type,
            Some(E::ExecutionSuspended(_) | E::ExecutionResumed(_))
        );
        inst.inbox.push(e);
        self.maybe_dispatch(id, inst);
        self.tend_wake(rt, id, inst).await;
        if control {
            // Waiters watch the status; only these events change it here.
            self.changed(id);
        }
        Ok(Vec::new())
    }

    /// Hands the next turn to a worker when one is due.
    fn maybe_dispatch(&self, id: &str, inst: &mut Inst) {
        if !inst.exists
            || inst.turn.is_some()
            || inst.inbox.is_empty()
            || inst.meta.suspended
            || is_terminal(inst.meta.status)
            || inst.meta.start_at_ms.is_some_and(|at| at > now_ms())
        {
            return;
        }
        let mut new_events = Vec::with_capacity(inst.inbox.len() + 1);
        new_events.push(history::event(
            -1,
            now_ms(),
            E::WorkflowStarted(dt::WorkflowStartedEvent { version: None }),
        ));
        new_events.extend(inst.inbox.iter().cloned());
        if inst.history.is_empty()
            && inst.meta.status == history::PENDING
            && let Some(rt) = self.rt.upgrade()
        {
            let waited = (now_ms() - inst.meta.created_ms).max(0) as u64;
            rt.metrics.workflow_scheduling(
                &self.namespace,
                &inst.meta.name,
                Duration::from_millis(waited),
            );
        }
        let token = uuid::Uuid::new_v4().to_string();
        let work = dt::WorkItem {
            request: Some(dt::work_item::Request::WorkflowRequest(
                dt::WorkflowRequest {
                    instance_id: id.to_string(),
                    execution_id: Some(inst.meta.execution_id.clone()),
                    past_events: inst.history.clone(),
                    new_events: new_events.clone(),
                    ..Default::default()
                },
            )),
            completion_token: String::new(),
        };
        inst.turn = Some(Turn {
            token: token.clone(),
            new_events,
            taken: inst.inbox.len(),
        });
        self.hub.dispatch(hub::Item {
            token,
            kind: hub::Kind::Turn {
                instance: id.to_string(),
            },
            work: Box::new(work),
            since: std::time::SystemTime::now(),
        });
    }

    /// Hands out again the open activities this host's workers do not
    /// hold (another app's are always sent again: that app drops what its
    /// workers hold).
    fn hand_out_open(
        &self,
        id: &str,
        meta: &Meta,
        open: Vec<(i32, dt::TaskScheduledEvent, Option<dt::TaskRouter>)>,
    ) {
        for (task, t, router) in open {
            let kind = hub::Kind::Activity {
                instance: id.to_string(),
                task,
                generation: meta.generation,
                owner: self.actor_type.clone(),
            };
            if !self.hub.holds(&kind) {
                self.dispatch_activity(id, meta, task, t, router);
            }
        }
    }

    /// Sends an operation to an actor until it lands, backing off from
    /// 50 ms to 5 s between tries: `Some(Ok)` once it did, `Some(Err)` for
    /// an error `settles` calls final, `None` when the engine is gone.
    async fn send_until_landed(
        me: &Weak<Workflows>,
        actor_type: &str,
        id: &str,
        what: &str,
        body: &[u8],
        settles: fn(&ApiError) -> bool,
    ) -> Option<Result<Bytes, ApiError>> {
        let mut wait = Duration::from_millis(50);
        loop {
            let w = me.upgrade()?;
            match w.send_to(actor_type, id, what.into(), body.to_vec()).await {
                Ok(b) => return Some(Ok(b)),
                Err(e) if settles(&e) => return Some(Err(e)),
                Err(e) => {
                    tracing::debug!(actor_type, id, what, error = %e.message, "workflows: a call to another instance or app failed; trying again");
                }
            }
            drop(w);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    fn dispatch_activity(
        &self,
        id: &str,
        meta: &Meta,
        task: i32,
        t: dt::TaskScheduledEvent,
        router: Option<dt::TaskRouter>,
    ) {
        let generation = meta.generation;
        let remote = self.remote_app(router.as_ref());
        let work = dt::WorkItem {
            request: Some(dt::work_item::Request::ActivityRequest(
                dt::ActivityRequest {
                    name: t.name,
                    version: t.version,
                    input: t.input,
                    workflow_instance: Some(dt::WorkflowInstance {
                        instance_id: id.to_string(),
                        execution_id: None,
                    }),
                    task_id: task,
                    parent_trace_context: meta.trace.clone().map(|trace_parent| dt::TraceContext {
                        trace_parent,
                        ..Default::default()
                    }),
                    task_execution_id: t.task_execution_id,
                },
            )),
            completion_token: String::new(),
        };
        if let Some(app) = remote {
            // Run by the other app's workers: sent to its activity actor
            // (retried until it lands; a restart here sends it again).
            let Some(dt::work_item::Request::ActivityRequest(a)) = work.request else {
                return;
            };
            let target = format!("dapr.internal.{}.{app}.activity", self.namespace);
            let actor_id = format!("{id}::{task}::{generation}");
            let what = format!("method/run/{}", self.app_id);
            let body = a.encode_to_vec();
            let me = self.this.clone();
            tokio::spawn(async move {
                Self::send_until_landed(&me, &target, &actor_id, &what, &body, |_| false).await;
            });
            return;
        }
        self.hub.dispatch(hub::Item {
            token: uuid::Uuid::new_v4().to_string(),
            kind: hub::Kind::Activity {
                instance: id.to_string(),
                task,
                generation,
                owner: self.actor_type.clone(),
            },
            work: Box::new(work),
            since: std::time::SystemTime::now(),
        });
    }

    async fn complete(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        resp: dt::WorkflowResponse,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(turn) = inst.turn.take() else {
            return Ok(Vec::new());
        };
        if turn.token != resp.completion_token {
            inst.turn = Some(turn);
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut new_events = turn.new_events;
        if let Some(v) = &resp.version
            && let Some(first) = new_events.first_mut()
            && let Some(E::WorkflowStarted(ws)) = &mut first.event_type
        {
            ws.version = Some(v.clone());
        }
        let mut history_all = inst.history.clone();
        history_all.extend(new_events.iter().cloned());
        let outcome = match history::apply(&history_all, &resp, now) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(instance = %id, reason = %why, "workflows: a worker's answer does not fit the instance's history; the instance fails");
                let (e, failure) = history::failed_by_sidecar(
                    -1,
                    now,
                    "WorkflowResponseError",
                    format!("the worker's answer does not fit the history: {why}"),
                );
                history::Outcome {
                    appended: vec![e],
                    completion: Some((history::FAILED, None, Some(failure))),
                    ..Default::default()
                }
            }
        };
        let status_before = inst.meta.status;
        let mut m = inst.meta.clone();
        let mut ops = Vec::new();
        // The inbox events the turn carried are history now.
        let consumed: Vec<u32> = m.inbox.drain(..turn.taken.min(m.inbox.len())).collect();
        for i in &consumed {
            ops.push(store::delete(store::inbox_key(*i)));
        }
        let mut inbox: Vec<dt::HistoryEvent> =
            inst.inbox[turn.taken.min(inst.inbox.len())..].to_vec();
        m.custom_status = resp.custom_status.clone();
        m.updated_ms = now;
        let mut history = history_all;
        if let Some((input, carry)) = outcome.continue_as_new.clone() {
            // A new generation: the history starts again from its input.
            for i in 0..m.history_len {
                ops.push(store::delete(store::history_key(i)));
            }
            history = Vec::new();
            m.history_len = 0;
            m.generation += 1;
            m.input = input.clone();
            m.output = None;
            m.execution_id = uuid::Uuid::new_v4().simple().to_string();
            let started = history::event(
                -1,
                now,
                E::ExecutionStarted(dt::ExecutionStartedEvent {
                    name: m.name.clone(),
                    input,
                    workflow_instance: Some(dt::WorkflowInstance {
                        instance_id: id.to_string(),
                        execution_id: Some(m.execution_id.clone()),
                    }),
                    parent_instance: m.parent.as_ref().map(|p| dt::ParentInstanceInfo {
                        task_scheduled_id: p.task,
                        name: Some(p.name.clone()),
                        workflow_instance: Some(dt::WorkflowInstance {
                            instance_id: p.id.clone(),
                            execution_id: Some(p.execution.clone()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            );
            let mut head = vec![started];
            head.extend(carry);
            // Results of the old generation mean nothing to the new one.
            inbox.retain(|e| {
                !matches!(
                    e.event_type,
                    Some(E::TaskCompleted(_) | E::TaskFailed(_) | E::TimerFired(_))
                )
            });
            head.extend(inbox);
            inbox = head;
            for i in m.inbox.drain(..) {
                ops.push(store::delete(store::inbox_key(i)));
            }
            for e in &inbox {
                let seq = m.next_inbox;
                m.next_inbox += 1;
                m.inbox.push(seq);
                ops.push(store::put_event(store::inbox_key(seq), e));
            }
            m.status = history::RUNNING;
        } else {
            history.extend(outcome.appended.iter().cloned());
            for (i, e) in history.iter().enumerate().skip(m.history_len as usize) {
                ops.push(store::put_event(store::history_key(i as u32), e));
            }
            m.history_len = history.len() as u32;
            if let Some((status, output, failure)) = &outcome.completion {
                m.status = *status;
                m.output = output.clone();
                m.failure = failure.clone();
                m.completed_ms = Some(now);
            } else if outcome.stalled {
                m.status = history::STALLED;
            } else {
                m.status = history::RUNNING;
            }
        }
        ops.push(store::put_meta(&m));
        if let Err(e) = store::write(rt, &self.actor_type, id, ops).await {
            // Nothing changed: the turn is handed out again from the store.
            tracing::warn!(instance = %id, error = %e.message, "workflows: a turn could not be saved; it runs again");
            inst.loaded = false;
            return Err(e);
        }
        inst.meta = m;
        inst.history = history;
        inst.inbox = inbox;
        let generation = inst.meta.generation;
        for (task, t, router) in outcome.activities {
            self.dispatch_activity(id, &inst.meta, task, t, router);
        }
        for (timer, at) in outcome.timers {
            self.set_timer(rt, id, generation, timer, at).await;
        }
        for (task, c, router) in outcome.children {
            let c = dt::ChildWorkflowInstanceCreatedEvent {
                instance_id: c.instance_id,
                name: c.name,
                version: c.version,
                input: c.input,
                parent_trace_context: None,
            };
            self.start_child(id, &inst.meta, task, c, router);
        }
        if outcome.completion.is_some() {
            self.finished(rt, id, inst).await;
        } else {
            self.maybe_dispatch(id, inst);
            self.tend_wake(rt, id, inst).await;
        }
        if inst.meta.status != status_before {
            self.changed(id);
        }
        Ok(Vec::new())
    }

    /// An instance reached a final status: its parent is told, its
    /// children stopped when it was terminated with `recurse`, its
    /// recovery reminder dropped, and its actor let go a little later.
    async fn finished(&self, rt: &Arc<Runtime>, id: &str, inst: &mut Inst) {
        inst.turn = None;
        self.hub.forget(id, &self.actor_type);
        let status = match inst.meta.status {
            history::COMPLETED => "success",
            history::TERMINATED => "terminated",
            _ => "failed",
        };
        let ran = Duration::from_millis((now_ms() - inst.meta.created_ms).max(0) as u64);
        rt.metrics
            .workflow_execution(&self.namespace, &inst.meta.name, status, ran);
        let tracer = rt.tracer();
        if tracer.is_on() {
            let parent = inst
                .meta
                .trace
                .as_deref()
                .and_then(tandem_proxy::trace::Context::parse);
            let started =
                std::time::UNIX_EPOCH + Duration::from_millis(inst.meta.created_ms.max(0) as u64);
            let name = inst.meta.name.clone();
            let mut span = tracer.start_at(
                || format!("orchestration||{name}"),
                tandem_proxy::trace::Kind::Server,
                parent,
                started,
            );
            span.attribute("dapr.workflow.instance_id", id);
            span.attribute("dapr.workflow.name", inst.meta.name.as_str());
            span.attribute("dapr.workflow.status", status_name(inst.meta.status));
            tracer.end(span, status == "success");
        }
        if inst.meta.parent.is_some() {
            self.notify_parent(id, inst);
        } else {
            // Off the caller's path: a reminder left behind by a crash
            // finds the instance finished and removes itself.
            inst.wake = false;
            let (me, id) = (self.this.clone(), id.to_string());
            let rt = rt.clone();
            tokio::spawn(async move {
                if let Some(me) = me.upgrade()
                    && let Err(e) =
                        crate::actors::reminders::unregister(&rt, &me.actor_type, &id, "wake").await
                {
                    tracing::debug!(instance = %id, error = %e.message, "workflows: dropping the wake reminder failed");
                }
            });
        }
    }

    /// Tells the parent how this child ended (retried until it lands;
    /// the parent drops a repeat).
    fn notify_parent(&self, id: &str, inst: &Inst) {
        let Some(p) = inst.meta.parent.clone() else {
            return;
        };
        let kind = if inst.meta.status == history::COMPLETED {
            E::ChildWorkflowInstanceCompleted(dt::ChildWorkflowInstanceCompletedEvent {
                task_scheduled_id: p.task,
                result: inst.meta.output.clone(),
            })
        } else {
            E::ChildWorkflowInstanceFailed(dt::ChildWorkflowInstanceFailedEvent {
                task_scheduled_id: p.task,
                failure_details: Some(
                    inst.meta
                        .failure
                        .as_ref()
                        .map(history::Failure::details)
                        .unwrap_or_else(|| dt::TaskFailureDetails {
                            error_type: status_name(inst.meta.status).into(),
                            error_message: format!(
                                "child workflow {id} ended {}",
                                status_name(inst.meta.status)
                            ),
                            ..Default::default()
                        }),
                ),
            })
        };
        let e = history::event(-1, now_ms(), kind);
        let me = self.this.clone();
        let id = id.to_string();
        let parent_type = self.workflow_type(&p.app);
        tokio::spawn(async move {
            // A parent that is gone (purged) has nobody to tell.
            let gone = |e: &ApiError| e.http == StatusCode::NOT_FOUND;
            let body = e.encode_to_vec();
            if Self::send_until_landed(&me, &parent_type, &p.id, "method/event/child", &body, gone)
                .await
                .is_none()
            {
                return;
            }
            // Kept so a restart does not tell it again.
            let Some(w) = me.upgrade() else { return };
            let _ = w
                .send(&id, "method/remind/notified".into(), Vec::new())
                .await;
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_child(
        &self,
        parent_id: &str,
        parent: &Meta,
        task: i32,
        c: dt::ChildWorkflowInstanceCreatedEvent,
        router: Option<dt::TaskRouter>,
    ) {
        let child_app = self.remote_app(router.as_ref());
        let child_type = self.workflow_type(child_app.as_deref().unwrap_or_default());
        let child = c.instance_id;
        let mut started = history::event(
            -1,
            now_ms(),
            E::ExecutionStarted(dt::ExecutionStartedEvent {
                name: c.name,
                version: c.version,
                input: c.input,
                workflow_instance: Some(dt::WorkflowInstance {
                    instance_id: child.clone(),
                    execution_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                }),
                parent_instance: Some(dt::ParentInstanceInfo {
                    task_scheduled_id: task,
                    name: Some(parent.name.clone()),
                    version: None,
                    workflow_instance: Some(dt::WorkflowInstance {
                        instance_id: parent_id.to_string(),
                        execution_id: Some(parent.execution_id.clone()),
                    }),
                    app_id: Some(self.app_id.clone()),
                    app_namespace: None,
                }),
                parent_trace_context: parent.trace.clone().map(|trace_parent| dt::TraceContext {
                    trace_parent,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        started.router = Some(dt::TaskRouter {
            source_app_id: self.app_id.clone(),
            target_app_id: Some(child_app.clone().unwrap_or_else(|| self.app_id.clone())),
            target_app_namespace: None,
        });
        let me = self.this.clone();
        let parent_id = parent_id.to_string();
        let generation = parent.generation;
        tokio::spawn(async move {
            // Another instance holds the id: the parent's call fails.
            let refused =
                |e: &ApiError| e.http == StatusCode::CONFLICT || e.http == StatusCode::BAD_REQUEST;
            let body = started.encode_to_vec();
            let Some(Err(e)) =
                Self::send_until_landed(&me, &child_type, &child, "method/create", &body, refused)
                    .await
            else {
                return;
            };
            let failed = history::event(
                -1,
                now_ms(),
                E::ChildWorkflowInstanceFailed(dt::ChildWorkflowInstanceFailedEvent {
                    task_scheduled_id: task,
                    failure_details: Some(dt::TaskFailureDetails {
                        error_type: "ChildWorkflowStartError".into(),
                        error_message: e.message,
                        ..Default::default()
                    }),
                }),
            );
            if let Some(w) = me.upgrade() {
                let _ = w
                    .send(
                        &parent_id,
                        format!("method/event/{generation}"),
                        failed.encode_to_vec(),
                    )
                    .await;
            }
        });
    }

    async fn terminate_here(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        e: dt::HistoryEvent,
    ) -> Result<Vec<u8>, ApiError> {
        if !inst.exists {
            return Err(not_found(id));
        }
        if is_terminal(inst.meta.status) {
            return Ok(Vec::new());
        }
        let Some(E::ExecutionTerminated(t)) = &e.event_type else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                "terminate takes an executionTerminated event",
            ));
        };
        let now = now_ms();
        let mut m = inst.meta.clone();
        let mut ops = Vec::new();
        for i in m.inbox.drain(..) {
            ops.push(store::delete(store::inbox_key(i)));
        }
        let mut history = inst.history.clone();
        history.push(e.clone());
        history.push(history::event(
            -1,
            now,
            E::ExecutionCompleted(dt::ExecutionCompletedEvent {
                workflow_status: history::TERMINATED,
                result: t.input.clone(),
                failure_details: None,
            }),
        ));
        for (i, ev) in history.iter().enumerate().skip(m.history_len as usize) {
            ops.push(store::put_event(store::history_key(i as u32), ev));
        }
        m.history_len = history.len() as u32;
        m.status = history::TERMINATED;
        m.output = t.input.clone();
        m.completed_ms = Some(now);
        m.updated_ms = now;
        m.suspended = false;
        ops.push(store::put_meta(&m));
        store::write(rt, &self.actor_type, id, ops).await?;
        let open = history::open_work(&inst.history, &inst.inbox);
        inst.meta = m;
        inst.history = history;
        inst.inbox.clear();
        if t.recurse {
            for (_, c, router) in open.children {
                let me = self.this.clone();
                let child_type = self.workflow_type(
                    self.remote_app(router.as_ref())
                        .as_deref()
                        .unwrap_or_default(),
                );
                let stop = history::event(
                    -1,
                    now,
                    E::ExecutionTerminated(dt::ExecutionTerminatedEvent {
                        input: t.input.clone(),
                        recurse: true,
                    }),
                );
                tokio::spawn(async move {
                    if let Some(w) = me.upgrade()
                        && let Err(e) = w
                            .send_to(
                                &child_type,
                                &c.instance_id,
                                "method/terminate".into(),
                                stop.encode_to_vec(),
                            )
                            .await
                    {
                        tracing::debug!(child = %c.instance_id, error = %e.message, "workflows: terminating a child failed");
                    }
                });
            }
        }
        self.finished(rt, id, inst).await;
        self.changed(id);
        Ok(Vec::new())
    }

    /// The source's side of a rerun: the new history, sent to the new id.
    async fn rerun_here(
        &self,
        id: &str,
        inst: &Inst,
        req: dt::RerunWorkflowFromEventRequest,
    ) -> Result<Vec<u8>, ApiError> {
        if !inst.exists {
            return Err(not_found(id));
        }
        let bad = |m: String| err(StatusCode::BAD_REQUEST, "ERR_RERUN_WORKFLOW", m);
        if !is_terminal(inst.meta.status) {
            return Err(bad(format!(
                "workflow instance {id} is {}; only a finished instance can be rerun",
                status_name(inst.meta.status)
            )));
        }
        if inst.meta.parent.is_some() {
            return Err(bad(format!(
                "workflow instance {id} is a child workflow; rerun its parent instead"
            )));
        }
        let new_id = req.new_instance_id.clone().unwrap_or_default();
        let history = history::fork(
            &inst.history,
            req.event_id as i32,
            &new_id,
            req.overwrite_input.then_some(req.input.clone()),
            req.new_child_workflow_instance_id.clone(),
        )
        .map_err(|(code, m)| {
            if code == StatusCode::NOT_FOUND {
                err(StatusCode::NOT_FOUND, "ERR_RERUN_WORKFLOW", m)
            } else {
                bad(m)
            }
        })?;
        let body = dt::GetInstanceHistoryResponse { events: history }.encode_to_vec();
        self.send(&new_id, "method/adopt".into(), body).await?;
        Ok(Vec::new())
    }

    /// The new instance's side of a rerun: its history written, then what
    /// it waits for handed out as after any load.
    async fn adopt(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        h: dt::GetInstanceHistoryResponse,
    ) -> Result<Vec<u8>, ApiError> {
        if inst.exists {
            return Err(err(
                StatusCode::CONFLICT,
                "ERR_INSTANCE_ID_ALREADY_EXISTS",
                format!(
                    "a workflow with ID '{id}' already exists; give the rerun another new instance ID"
                ),
            ));
        }
        let Some(es) = h.events.iter().find_map(|e| match &e.event_type {
            Some(E::ExecutionStarted(es)) => Some(es.clone()),
            _ => None,
        }) else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_RERUN_WORKFLOW",
                "the history to rerun has no executionStarted event",
            ));
        };
        let now = now_ms();
        let meta = Meta {
            name: es.name.clone(),
            generation: inst.meta.generation + 1,
            status: history::RUNNING,
            created_ms: now,
            updated_ms: now,
            input: es.input.clone(),
            execution_id: uuid::Uuid::new_v4().simple().to_string(),
            history_len: h.events.len() as u32,
            trace: es
                .parent_trace_context
                .as_ref()
                .map(|t| t.trace_parent.clone())
                .filter(|t| !t.is_empty()),
            ..Meta::default()
        };
        let mut ops: Vec<_> = h
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| store::put_event(store::history_key(i as u32), e))
            .collect();
        ops.push(store::put_meta(&meta));
        store::write(rt, &self.actor_type, id, ops).await?;
        *inst = Inst {
            loaded: true,
            exists: true,
            meta,
            history: h.events,
            ..Inst::default()
        };
        self.recover(rt, id, inst).await;
        self.changed(id);
        Ok(Vec::new())
    }

    async fn purge_here(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        recursive: bool,
    ) -> Result<Vec<u8>, ApiError> {
        if !inst.exists {
            return Err(not_found(id));
        }
        if !is_terminal(inst.meta.status) {
            return Err(err(
                StatusCode::PRECONDITION_FAILED,
                "ERR_PURGE_WORKFLOW",
                format!(
                    "workflow instance {id} is {}; only a finished instance can be purged (terminate it first)",
                    status_name(inst.meta.status)
                ),
            ));
        }
        let mut count = 1;
        if recursive {
            for (child, app) in history::children(&inst.history) {
                let child_type = self.workflow_type(app.as_deref().unwrap_or_default());
                match Box::pin(self.send_to(&child_type, &child, "method/purge".into(), vec![1]))
                    .await
                {
                    Ok(body) => {
                        count += decode::<dt::PurgeInstancesResponse>(&body)?.deleted_instance_count
                    }
                    Err(e) if e.http == StatusCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Events first, the metadata last: a purge cut short is done
        // again by the next one.
        let mut keys: Vec<String> = (0..inst.meta.history_len).map(store::history_key).collect();
        keys.extend(inst.meta.inbox.iter().map(|i| store::inbox_key(*i)));
        for chunk in keys.chunks(100) {
            let ops = chunk.iter().cloned().map(store::delete).collect();
            store::write(rt, &self.actor_type, id, ops).await?;
        }
        store::write(
            rt,
            &self.actor_type,
            id,
            vec![store::delete(store::META.into())],
        )
        .await?;
        let _ = crate::actors::reminders::unregister_type(rt, &self.actor_type, Some(id)).await;
        self.hub.forget(id, &self.actor_type);
        *inst = Inst {
            loaded: true,
            ..Inst::default()
        };
        self.changed(id);
        Ok(dt::PurgeInstancesResponse {
            deleted_instance_count: count,
            is_complete: Some(true),
        }
        .encode_to_vec())
    }

    async fn remind(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        inst: &mut Inst,
        name: &str,
    ) -> Result<Vec<u8>, ApiError> {
        if !inst.exists {
            // A reminder of an instance purged or never written.
            inst.wake = true;
            self.drop_wake(rt, id, inst).await;
            return Ok(Vec::new());
        }
        if name == "notified" {
            if !inst.meta.parent_notified {
                inst.meta.parent_notified = true;
                store::write(rt, &self.actor_type, id, vec![store::put_meta(&inst.meta)]).await?;
            }
            inst.wake = true;
            self.drop_wake(rt, id, inst).await;
            return Ok(Vec::new());
        }
        if name == "wake" {
            if is_terminal(inst.meta.status) {
                if inst.meta.parent.is_some() && !inst.meta.parent_notified {
                    self.notify_parent(id, inst);
                } else {
                    inst.wake = true;
                    self.drop_wake(rt, id, inst).await;
                }
                return Ok(Vec::new());
            }
            // Work lost from the hub (a worker's item given up on): out again.
            let open = history::open_work(&inst.history, &inst.inbox);
            self.hand_out_open(id, &inst.meta, open.activities);
            if inst.turn.is_some()
                && !self.hub.holds(&hub::Kind::Turn {
                    instance: id.to_string(),
                })
            {
                inst.turn = None;
            }
            self.maybe_dispatch(id, inst);
            return Ok(Vec::new());
        }
        if name == "start" {
            inst.meta.start_at_ms = None;
            self.maybe_dispatch(id, inst);
            return Ok(Vec::new());
        }
        // `timer-<generation>-<id>`
        let mut parts = name.splitn(3, '-');
        if let (Some("timer"), Some(g), Some(t)) = (parts.next(), parts.next(), parts.next())
            && let (Ok(generation), Ok(timer)) = (g.parse::<u64>(), t.parse::<i32>())
        {
            let fire_at = inst.history.iter().find_map(|e| match &e.event_type {
                Some(E::TimerCreated(c)) if e.event_id == timer => c.fire_at,
                _ => None,
            });
            let fired = history::event(
                -1,
                now_ms(),
                E::TimerFired(dt::TimerFiredEvent {
                    fire_at,
                    timer_id: timer,
                }),
            );
            return Box::pin(self.deliver(rt, id, inst, fired, generation, false)).await;
        }
        Ok(Vec::new())
    }

    async fn set_timer(&self, rt: &Arc<Runtime>, id: &str, generation: u64, timer: i32, at: i64) {
        if at >= history::NEVER_MS {
            return;
        }
        let name = format!("timer-{generation}-{timer}");
        self.set_reminder(rt, id, &name, at - now_ms(), None).await;
    }

    /// Keeps a `wake` reminder while the instance has work out (a turn or
    /// activities a crash could lose), and none while it only waits for
    /// timers (their own reminders) or events (their callers load it).
    async fn tend_wake(&self, rt: &Arc<Runtime>, id: &str, inst: &mut Inst) {
        if is_terminal(inst.meta.status) {
            return;
        }
        let busy = !inst.inbox.is_empty()
            || inst.turn.is_some()
            || !history::open_work(&inst.history, &inst.inbox)
                .activities
                .is_empty();
        if busy && !inst.wake {
            self.set_reminder(rt, id, "wake", WAKE.as_millis() as i64, Some(WAKE))
                .await;
            inst.wake = true;
        } else if !busy && inst.wake {
            self.drop_wake(rt, id, inst).await;
        }
    }

    async fn drop_wake(&self, rt: &Arc<Runtime>, id: &str, inst: &mut Inst) {
        inst.wake = false;
        if let Err(e) = crate::actors::reminders::unregister(rt, &self.actor_type, id, "wake").await
        {
            tracing::debug!(instance = %id, error = %e.message, "workflows: dropping the wake reminder failed");
        }
    }

    async fn set_reminder(
        &self,
        rt: &Arc<Runtime>,
        id: &str,
        name: &str,
        in_ms: i64,
        period: Option<Duration>,
    ) {
        let r = crate::actors::reminders::Reminder {
            due_time: format!("{}ms", in_ms.max(0)),
            period: period
                .map(|p| format!("{}ms", p.as_millis()))
                .unwrap_or_default(),
            overwrite: true,
            ..Default::default()
        };
        if let Err(e) = crate::actors::reminders::register(rt, &self.actor_type, id, name, r).await
        {
            tracing::warn!(instance = %id, reminder = %name, error = %e.message, "workflows: a reminder could not be stored");
        }
    }

    /// Connected workers, for the metadata API.
    pub fn connected_workers(&self) -> usize {
        self.hub.workers()
    }
}

struct Hook(Weak<Workflows>);

impl Internal for Hook {
    fn call<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<Answer, ApiError>> {
        Box::pin(async move {
            let Some(w) = self.0.upgrade() else {
                return Err(err(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_ACTOR_RUNTIME_CLOSED",
                    "the workflow engine is stopping",
                ));
            };
            w.handle(call).await
        })
    }
}
