//! A minimal durabletask worker written against the protocol alone (no
//! SDK): it connects to a sidecar's gRPC port as the SDKs do (`Hello`,
//! then `GetWorkItems`), runs a few fixed workflows and one activity, and
//! records what ran, so tests can check the engine's promises and benches
//! can measure the engine without an SDK's own cost.
//!
//! Workflows (by name):
//! - `chain`: input `n` (JSON number) → `inc` three times → `n + 3`.
//! - `timer`: input `ms` → one durable timer `ms` after its first turn;
//!   completes with the timer's lateness as the worker saw it.
//! - `waiter`: waits for the external event `go` → its data.
//! - `liar`: after its first activity, schedules an action with an id
//!   the history already holds (a worker whose history does not match).

#![allow(dead_code)]

use dt::history_event::EventType as E;
use dt::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use dt::workflow_action::WorkflowActionType as A;
use prost_types::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_proto::durabletask as dt;
use tonic::transport::Channel;

pub type Client = TaskHubSidecarServiceClient<Channel>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn ms_of(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub async fn connect(endpoint: &str) -> Result<Client, tonic::transport::Error> {
    let ch = Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await?;
    Ok(TaskHubSidecarServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// What the worker saw and did.
#[derive(Default)]
pub struct Stats {
    /// Activity runs per (instance, task id).
    pub runs: Mutex<HashMap<(String, i32), u32>>,
    /// Activities whose result the sidecar acknowledged.
    pub acked: Mutex<HashSet<(String, i32)>>,
    /// Activities run again after their result was acknowledged.
    pub reran_after_ack: Mutex<Vec<(String, i32)>>,
    /// Timer lateness in ms as the worker saw it (turn arrival − fireAt),
    /// and as the sidecar stamped it (timerFired time − fireAt).
    pub lateness: Mutex<Vec<(i64, i64)>>,
    pub turns: Mutex<u64>,
}

pub struct Worker {
    /// The sidecar's gRPC endpoint (changed by a test that restarts it).
    pub endpoint: Mutex<String>,
    pub stats: Stats,
    /// How long `inc` takes.
    pub activity_ms: Mutex<(u64, u64)>,
    /// Set: the worker stops (its streams end, answers are not sent).
    pub stopped: std::sync::atomic::AtomicBool,
    /// Set: activities are received and never answered (a worker that
    /// dies mid-activity), until cleared.
    pub swallow_activities: std::sync::atomic::AtomicBool,
}

impl Worker {
    pub fn new(endpoint: String) -> Arc<Self> {
        Arc::new(Self {
            endpoint: Mutex::new(endpoint),
            stats: Stats::default(),
            activity_ms: Mutex::new((0, 0)),
            stopped: Default::default(),
            swallow_activities: Default::default(),
        })
    }

    fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs until stopped: connects, takes work, reconnects when the
    /// stream ends.
    pub async fn run(self: Arc<Self>) {
        while !self.stopped() {
            let endpoint = self.endpoint.lock().unwrap().clone();
            let Ok(mut c) = connect(&endpoint).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if c.hello(()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let Ok(stream) = c
                .get_work_items(dt::GetWorkItemsRequest {
                    capabilities: vec![dt::WorkerCapability::HealthPing as i32],
                })
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::select! {
                    n = stream.message() => n,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if self.stopped() { return; }
                        continue;
                    }
                };
                let Ok(Some(item)) = next else { break };
                if self.stopped() {
                    return;
                }
                let me = self.clone();
                let c = c.clone();
                tokio::spawn(async move { me.work(c, item).await });
            }
        }
    }

    async fn work(self: Arc<Self>, mut c: Client, item: dt::WorkItem) {
        match item.request {
            Some(dt::work_item::Request::WorkflowRequest(r)) => {
                *self.stats.turns.lock().unwrap() += 1;
                let (actions, custom) = self.decide(&r);
                let resp = dt::WorkflowResponse {
                    instance_id: r.instance_id,
                    actions,
                    custom_status: custom,
                    completion_token: item.completion_token,
                    ..Default::default()
                };
                if !self.stopped() {
                    let _ = c.complete_orchestrator_task(resp).await;
                }
            }
            Some(dt::work_item::Request::ActivityRequest(a)) => {
                if self
                    .swallow_activities
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return;
                }
                let instance = a
                    .workflow_instance
                    .as_ref()
                    .map(|w| w.instance_id.clone())
                    .unwrap_or_default();
                let key = (instance.clone(), a.task_id);
                if self.stats.acked.lock().unwrap().contains(&key) {
                    self.stats.reran_after_ack.lock().unwrap().push(key.clone());
                }
                *self
                    .stats
                    .runs
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default() += 1;
                let (lo, hi) = *self.activity_ms.lock().unwrap();
                if hi > 0 {
                    let ms = lo + (now_ms() as u64 ^ (a.task_id as u64 * 7919)) % (hi - lo + 1);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let n: i64 = a.input.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                let resp = dt::ActivityResponse {
                    instance_id: instance,
                    task_id: a.task_id,
                    result: Some((n + 1).to_string()),
                    failure_details: None,
                    completion_token: item.completion_token,
                };
                if self.stopped() {
                    return;
                }
                if c.complete_activity_task(resp).await.is_ok() {
                    self.stats.acked.lock().unwrap().insert(key);
                }
            }
            _ => {}
        }
    }

    /// One orchestration turn of the fixed workflows.
    fn decide(&self, r: &dt::WorkflowRequest) -> (Vec<dt::WorkflowAction>, Option<String>) {
        let all: Vec<&dt::HistoryEvent> = r.past_events.iter().chain(&r.new_events).collect();
        let mut name = String::new();
        let mut input = String::new();
        let mut scheduled = Vec::new();
        let mut results: HashMap<i32, String> = HashMap::new();
        let mut failed = None;
        let mut timer: Option<(i32, i64)> = None;
        let mut fired: Option<i64> = None;
        let mut event: Option<String> = None;
        for e in &all {
            match &e.event_type {
                Some(E::ExecutionStarted(s)) => {
                    name = s.name.clone();
                    input = s.input.clone().unwrap_or_default();
                }
                Some(E::TaskScheduled(_)) => scheduled.push(e.event_id),
                Some(E::TaskCompleted(t)) => {
                    results.insert(t.task_scheduled_id, t.result.clone().unwrap_or_default());
                }
                Some(E::TaskFailed(t)) => failed = t.failure_details.clone(),
                Some(E::TimerCreated(t)) => {
                    timer = Some((e.event_id, t.fire_at.as_ref().map(ms_of).unwrap_or(0)))
                }
                Some(E::TimerFired(_)) => fired = e.timestamp.as_ref().map(ms_of),
                Some(E::EventRaised(x)) if x.name == "go" => {
                    event = Some(x.input.clone().unwrap_or_default())
                }
                _ => {}
            }
        }
        let clock = r
            .new_events
            .iter()
            .find_map(|e| match e.event_type {
                Some(E::WorkflowStarted(_)) => e.timestamp.as_ref().map(ms_of),
                _ => None,
            })
            .unwrap_or_else(now_ms);
        let complete =
            |status: dt::OrchestrationStatus, result: Option<String>, id: i32| dt::WorkflowAction {
                id,
                workflow_action_type: Some(A::CompleteWorkflow(dt::CompleteWorkflowAction {
                    workflow_status: status as i32,
                    result,
                    ..Default::default()
                })),
                router: None,
            };
        let schedule = |id: i32, input: String| dt::WorkflowAction {
            id,
            workflow_action_type: Some(A::ScheduleTask(dt::ScheduleTaskAction {
                name: "inc".into(),
                input: Some(input),
                ..Default::default()
            })),
            router: None,
        };
        if let Some(f) = failed {
            return (
                vec![dt::WorkflowAction {
                    id: 99,
                    workflow_action_type: Some(A::CompleteWorkflow(dt::CompleteWorkflowAction {
                        workflow_status: dt::OrchestrationStatus::Failed as i32,
                        failure_details: Some(f),
                        ..Default::default()
                    })),
                    router: None,
                }],
                None,
            );
        }
        match name.as_str() {
            "chain" | "liar" => {
                let k = scheduled.len() as i32;
                if k == 0 {
                    return (vec![schedule(1, input)], None);
                }
                let Some(last) = results.get(&k) else {
                    return (Vec::new(), None);
                };
                if name == "liar" {
                    return (vec![schedule(1, last.clone())], None);
                }
                if k == 3 {
                    (
                        vec![complete(
                            dt::OrchestrationStatus::Completed,
                            Some(last.clone()),
                            4,
                        )],
                        Some(format!("\"step {k}\"")),
                    )
                } else {
                    (
                        vec![schedule(k + 1, last.clone())],
                        Some(format!("\"step {k}\"")),
                    )
                }
            }
            "timer" => match (timer, fired) {
                (None, _) => {
                    let ms: i64 = input.parse().unwrap_or(1000);
                    (
                        vec![dt::WorkflowAction {
                            id: 1,
                            workflow_action_type: Some(A::CreateTimer(dt::CreateTimerAction {
                                fire_at: Some(ts(clock + ms)),
                                name: None,
                                origin: Some(dt::create_timer_action::Origin::CreateTimer(
                                    dt::TimerOriginCreateTimer {},
                                )),
                            })),
                            router: None,
                        }],
                        None,
                    )
                }
                (Some((_, at)), Some(stamped)) => {
                    let seen = now_ms() - at;
                    self.stats
                        .lateness
                        .lock()
                        .unwrap()
                        .push((seen, stamped - at));
                    (
                        vec![complete(
                            dt::OrchestrationStatus::Completed,
                            Some(seen.to_string()),
                            2,
                        )],
                        None,
                    )
                }
                _ => (Vec::new(), None),
            },
            "waiter" => match event {
                Some(data) => (
                    vec![complete(dt::OrchestrationStatus::Completed, Some(data), 2)],
                    None,
                ),
                None if all
                    .iter()
                    .any(|e| matches!(e.event_type, Some(E::TimerCreated(_)))) =>
                {
                    (Vec::new(), None)
                }
                None => (
                    vec![dt::WorkflowAction {
                        id: 1,
                        workflow_action_type: Some(A::CreateTimer(dt::CreateTimerAction {
                            // The SDKs' "wait forever".
                            fire_at: Some(Timestamp {
                                seconds: 253_402_300_799,
                                nanos: 999_999_999,
                            }),
                            name: None,
                            origin: Some(dt::create_timer_action::Origin::ExternalEvent(
                                dt::TimerOriginExternalEvent { name: "go".into() },
                            )),
                        })),
                        router: None,
                    }],
                    None,
                ),
            },
            other => (
                vec![dt::WorkflowAction {
                    id: 1,
                    workflow_action_type: Some(A::CompleteWorkflow(dt::CompleteWorkflowAction {
                        workflow_status: dt::OrchestrationStatus::Failed as i32,
                        failure_details: Some(dt::TaskFailureDetails {
                            error_type: "WorkflowNotRegistered".into(),
                            error_message: format!("no workflow named {other}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    router: None,
                }],
                None,
            ),
        }
    }
}

/// Starts a workflow.
pub async fn start(c: &mut Client, name: &str, id: &str, input: &str) -> Result<(), tonic::Status> {
    c.start_instance(dt::CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        input: Some(input.into()),
        ..Default::default()
    })
    .await
    .map(drop)
}

/// Waits for an instance to finish (`None`: it does not exist).
pub async fn finished(
    c: &mut Client,
    id: &str,
    limit: Duration,
) -> Result<Option<dt::WorkflowState>, tonic::Status> {
    let mut req = tonic::Request::new(dt::GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: true,
        router: None,
    });
    req.set_timeout(limit);
    let r = c.wait_for_instance_completion(req).await?.into_inner();
    Ok(r.exists.then(|| r.workflow_state.unwrap_or_default()))
}
