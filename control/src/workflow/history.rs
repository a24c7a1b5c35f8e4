//! An instance's history and what a worker's answer does to it: pure
//! functions over the durabletask messages, so the rules are tested
//! without a store or a worker.

use dt::history_event::EventType as E;
use dt::workflow_action::WorkflowActionType as A;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tandem_proto::durabletask as dt;

pub const RUNNING: i32 = dt::OrchestrationStatus::Running as i32;
pub const COMPLETED: i32 = dt::OrchestrationStatus::Completed as i32;
pub const CONTINUED_AS_NEW: i32 = dt::OrchestrationStatus::ContinuedAsNew as i32;
pub const FAILED: i32 = dt::OrchestrationStatus::Failed as i32;
pub const CANCELED: i32 = dt::OrchestrationStatus::Canceled as i32;
pub const TERMINATED: i32 = dt::OrchestrationStatus::Terminated as i32;
pub const PENDING: i32 = dt::OrchestrationStatus::Pending as i32;
pub const SUSPENDED: i32 = dt::OrchestrationStatus::Suspended as i32;
pub const STALLED: i32 = dt::OrchestrationStatus::Stalled as i32;

/// Fire times at or past this (the SDKs' "wait forever" sentinel, year
/// 9999) are recorded and never fired.
pub const NEVER_MS: i64 = 253_402_300_799_000;

pub fn is_terminal(status: i32) -> bool {
    matches!(status, COMPLETED | FAILED | CANCELED | TERMINATED)
}

pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

pub fn event(id: i32, at_ms: i64, e: E) -> dt::HistoryEvent {
    dt::HistoryEvent {
        event_id: id,
        timestamp: Some(ts(at_ms)),
        event_type: Some(e),
        router: None,
    }
}

/// A failure as kept in an instance's metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl Failure {
    pub fn of(d: &dt::TaskFailureDetails) -> Self {
        Self {
            error_type: d.error_type.clone(),
            message: d.error_message.clone(),
            stack: d.stack_trace.clone(),
        }
    }
    pub fn details(&self) -> dt::TaskFailureDetails {
        dt::TaskFailureDetails {
            error_type: self.error_type.clone(),
            error_message: self.message.clone(),
            stack_trace: self.stack.clone(),
            ..Default::default()
        }
    }
}

/// The instance that started this one as a child.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    pub id: String,
    pub task: i32,
    pub name: String,
    #[serde(default)]
    pub execution: String,
    #[serde(default)]
    pub app: String,
}

/// Marks an instance's metadata among the actor state store's values, so
/// a query can list instances (`ListInstanceIDs`).
pub const META_KIND: &str = "dapr.workflow";

/// What is kept about an instance beside its events (the `metadata` key).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Always `META_KIND` (set when written).
    #[serde(default)]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub generation: u64,
    pub status: i32,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    #[serde(default)]
    pub execution_id: String,
    /// How many `history-NNNNNN` keys there are.
    pub history_len: u32,
    /// The `inbox-NNNNNN` keys, oldest first.
    #[serde(default)]
    pub inbox: Vec<u32>,
    #[serde(default)]
    pub next_inbox: u32,
    #[serde(default)]
    pub suspended: bool,
    /// A finished child told its parent (so a restart does not again).
    #[serde(default)]
    pub parent_notified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_ms: Option<i64>,
    /// The workflow's trace (`traceparent` of its creation's span): its
    /// orchestration and activity spans join it, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The ids a history (and inbox) already settled: completions of tasks
/// and children, fired timers.
#[derive(Default)]
pub struct Settled {
    pub tasks: HashSet<i32>,
    pub timers: HashSet<i32>,
}

impl Settled {
    pub fn of<'a>(events: impl Iterator<Item = &'a dt::HistoryEvent>) -> Self {
        let mut s = Self::default();
        for e in events {
            s.add(e);
        }
        s
    }

    pub fn add(&mut self, e: &dt::HistoryEvent) {
        match &e.event_type {
            Some(E::TaskCompleted(c)) => {
                self.tasks.insert(c.task_scheduled_id);
            }
            Some(E::TaskFailed(c)) => {
                self.tasks.insert(c.task_scheduled_id);
            }
            Some(E::ChildWorkflowInstanceCompleted(c)) => {
                self.tasks.insert(c.task_scheduled_id);
            }
            Some(E::ChildWorkflowInstanceFailed(c)) => {
                self.tasks.insert(c.task_scheduled_id);
            }
            Some(E::TimerFired(t)) => {
                self.timers.insert(t.timer_id);
            }
            _ => {}
        }
    }

    /// Whether `e` settles something already settled (a second answer for
    /// one activity, a timer fired twice): such an event is dropped.
    pub fn repeats(&self, e: &dt::HistoryEvent) -> bool {
        match &e.event_type {
            Some(E::TaskCompleted(c)) => self.tasks.contains(&c.task_scheduled_id),
            Some(E::TaskFailed(c)) => self.tasks.contains(&c.task_scheduled_id),
            Some(E::ChildWorkflowInstanceCompleted(c)) => self.tasks.contains(&c.task_scheduled_id),
            Some(E::ChildWorkflowInstanceFailed(c)) => self.tasks.contains(&c.task_scheduled_id),
            Some(E::TimerFired(t)) => self.timers.contains(&t.timer_id),
            _ => false,
        }
    }
}

/// Work a history still waits for: activities scheduled and not
/// answered, timers not fired, children not finished.
#[derive(Default, Debug)]
pub struct Open {
    pub activities: Vec<(i32, dt::TaskScheduledEvent, Option<dt::TaskRouter>)>,
    pub timers: Vec<(i32, i64)>,
    pub children: Vec<(
        i32,
        dt::ChildWorkflowInstanceCreatedEvent,
        Option<dt::TaskRouter>,
    )>,
}

pub fn open_work(history: &[dt::HistoryEvent], inbox: &[dt::HistoryEvent]) -> Open {
    let settled = Settled::of(history.iter().chain(inbox));
    let mut open = Open::default();
    for e in history {
        match &e.event_type {
            Some(E::TaskScheduled(t)) if !settled.tasks.contains(&e.event_id) => {
                open.activities
                    .push((e.event_id, t.clone(), e.router.clone()));
            }
            Some(E::TimerCreated(t)) if !settled.timers.contains(&e.event_id) => {
                let at = t.fire_at.as_ref().map(ms_of).unwrap_or(0);
                open.timers.push((e.event_id, at));
            }
            Some(E::ChildWorkflowInstanceCreated(c)) if !settled.tasks.contains(&e.event_id) => {
                open.children
                    .push((e.event_id, c.clone(), e.router.clone()));
            }
            _ => {}
        }
    }
    open
}

/// Child instances a history created, with the app each runs on when
/// another's (for recursive terminate and purge).
pub fn children(history: &[dt::HistoryEvent]) -> Vec<(String, Option<String>)> {
    history
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(E::ChildWorkflowInstanceCreated(c)) => Some((
                c.instance_id.clone(),
                e.router.as_ref().and_then(|r| r.target_app_id.clone()),
            )),
            _ => None,
        })
        .collect()
}

/// The history a rerun starts from: `history` up to the event `target`
/// (an activity, a timer or a child the workflow created), each
/// completion kept with what it completes; then the work still open at
/// that point — unanswered activities, timers, children (their ids made
/// new: `<new_id>:<event id as 4 hex digits>`) — and the target itself,
/// with `input` (`Some`: overwrite) or the new child id. What is open in it
/// is handed out when the new instance is loaded. An `Err` carries the
/// status (NOT_FOUND: no such event) and why.
pub fn fork(
    history: &[dt::HistoryEvent],
    target: i32,
    new_id: &str,
    input: Option<Option<String>>,
    new_child_id: Option<String>,
) -> Result<Vec<dt::HistoryEvent>, (http::StatusCode, String)> {
    use std::collections::BTreeMap;
    let mut out = Vec::new();
    let mut activities: BTreeMap<i32, dt::HistoryEvent> = BTreeMap::new();
    let mut timers: BTreeMap<i32, dt::HistoryEvent> = BTreeMap::new();
    let mut children: BTreeMap<i32, dt::HistoryEvent> = BTreeMap::new();
    let mut found = None;
    for e in history {
        if e.event_id == target && e.event_id >= 0 {
            found = Some(e.clone());
            break;
        }
        let mut done = |held: &mut BTreeMap<i32, dt::HistoryEvent>, id: i32| {
            if let Some(s) = held.remove(&id) {
                out.push(s);
            }
            out.push(e.clone());
        };
        match &e.event_type {
            Some(E::TaskScheduled(_)) => {
                activities.insert(e.event_id, e.clone());
            }
            Some(E::TaskCompleted(c)) => done(&mut activities, c.task_scheduled_id),
            Some(E::TaskFailed(c)) => done(&mut activities, c.task_scheduled_id),
            Some(E::TimerCreated(_)) => {
                timers.insert(e.event_id, e.clone());
            }
            Some(E::TimerFired(t)) => done(&mut timers, t.timer_id),
            Some(E::ChildWorkflowInstanceCreated(_)) => {
                children.insert(e.event_id, e.clone());
            }
            Some(E::ChildWorkflowInstanceCompleted(c)) => done(&mut children, c.task_scheduled_id),
            Some(E::ChildWorkflowInstanceFailed(c)) => done(&mut children, c.task_scheduled_id),
            _ => out.push(e.clone()),
        }
    }
    let Some(mut found) = found else {
        return Err((
            http::StatusCode::NOT_FOUND,
            format!("the history has no event with ID {target}"),
        ));
    };
    let bad = |m: String| Err((http::StatusCode::BAD_REQUEST, m));
    match &mut found.event_type {
        Some(E::TaskScheduled(t)) => {
            if new_child_id.is_some() {
                return bad(format!(
                    "event {target} is an activity: it takes no new child workflow instance ID"
                ));
            }
            if let Some(i) = input {
                t.input = i;
            }
        }
        Some(E::TimerCreated(_)) => {
            if input.is_some() {
                return bad(format!("event {target} is a timer: it takes no input"));
            }
            if new_child_id.is_some() {
                return bad(format!(
                    "event {target} is a timer: it takes no new child workflow instance ID"
                ));
            }
        }
        Some(E::ChildWorkflowInstanceCreated(c)) => {
            c.instance_id = new_child_id.unwrap_or_else(|| format!("{new_id}:{target:04x}"));
            if let Some(i) = input {
                c.input = i;
            }
        }
        _ => {
            return Err((
                http::StatusCode::NOT_FOUND,
                format!(
                    "event {target} is not one a workflow can be rerun from (an activity, a timer or a child workflow)"
                ),
            ));
        }
    }
    out.extend(activities.into_values());
    out.extend(timers.into_values());
    for (id, mut c) in children {
        if let Some(E::ChildWorkflowInstanceCreated(x)) = &mut c.event_type {
            x.instance_id = format!("{new_id}:{id:04x}");
        }
        out.push(c);
    }
    out.push(found);
    Ok(out)
}

/// What one committed turn does.
#[derive(Default, Debug)]
pub struct Outcome {
    /// Events appended to the history after the turn's new events.
    pub appended: Vec<dt::HistoryEvent>,
    pub activities: Vec<(i32, dt::TaskScheduledEvent, Option<dt::TaskRouter>)>,
    pub timers: Vec<(i32, i64)>,
    pub children: Vec<(i32, dt::CreateChildWorkflowAction, Option<dt::TaskRouter>)>,
    /// A final status (not continue-as-new), its output and failure.
    pub completion: Option<(i32, Option<String>, Option<Failure>)>,
    /// Continue-as-new: the next generation's input and carried events.
    pub continue_as_new: Option<(Option<String>, Vec<dt::HistoryEvent>)>,
    pub stalled: bool,
}

/// Checks a worker's answer against the history and turns its actions
/// into events and side effects. An `Err` is an answer that does not fit
/// the history (an id used twice, an action the history already has);
/// the instance is then failed with that reason rather than left stuck.
pub fn apply(
    history: &[dt::HistoryEvent],
    resp: &dt::WorkflowResponse,
    now_ms: i64,
) -> Result<Outcome, String> {
    let mut used: HashSet<i32> = HashSet::new();
    for e in history {
        if matches!(
            e.event_type,
            Some(E::TaskScheduled(_) | E::TimerCreated(_) | E::ChildWorkflowInstanceCreated(_))
        ) {
            used.insert(e.event_id);
        }
    }
    let mut out = Outcome::default();
    let mut seen = HashSet::new();
    for a in &resp.actions {
        let Some(kind) = &a.workflow_action_type else {
            return Err(format!("action {} has no type", a.id));
        };
        if !matches!(kind, A::CompleteWorkflow(_)) {
            if !seen.insert(a.id) {
                return Err(format!("action id {} is used twice in one answer", a.id));
            }
            if used.contains(&a.id) {
                return Err(format!(
                    "action id {} is already in the instance's history (the worker's history does not match the sidecar's)",
                    a.id
                ));
            }
        }
        match kind {
            A::ScheduleTask(t) => {
                if t.name.is_empty() {
                    return Err(format!("action {}: an activity without a name", a.id));
                }
                let ev = dt::TaskScheduledEvent {
                    name: t.name.clone(),
                    version: t.version.clone(),
                    input: t.input.clone(),
                    parent_trace_context: None,
                    task_execution_id: t.task_execution_id.clone(),
                };
                let mut e = event(a.id, now_ms, E::TaskScheduled(ev.clone()));
                e.router = a.router.clone();
                out.appended.push(e);
                out.activities.push((a.id, ev, a.router.clone()));
            }
            A::CreateTimer(t) => {
                let at = t.fire_at.as_ref().map(ms_of).unwrap_or(now_ms);
                let origin = t.origin.clone().map(|o| match o {
                    dt::create_timer_action::Origin::CreateTimer(x) => {
                        dt::timer_created_event::Origin::CreateTimer(x)
                    }
                    dt::create_timer_action::Origin::ExternalEvent(x) => {
                        dt::timer_created_event::Origin::ExternalEvent(x)
                    }
                    dt::create_timer_action::Origin::ActivityRetry(x) => {
                        dt::timer_created_event::Origin::ActivityRetry(x)
                    }
                    dt::create_timer_action::Origin::ChildWorkflowRetry(x) => {
                        dt::timer_created_event::Origin::ChildWorkflowRetry(x)
                    }
                });
                out.appended.push(event(
                    a.id,
                    now_ms,
                    E::TimerCreated(dt::TimerCreatedEvent {
                        fire_at: t.fire_at,
                        name: t.name.clone(),
                        origin,
                    }),
                ));
                out.timers.push((a.id, at));
            }
            A::CreateChildWorkflow(c) => {
                if c.instance_id.is_empty() || c.name.is_empty() {
                    return Err(format!(
                        "action {}: a child workflow needs an instance id and a name",
                        a.id
                    ));
                }
                let mut e = event(
                    a.id,
                    now_ms,
                    E::ChildWorkflowInstanceCreated(dt::ChildWorkflowInstanceCreatedEvent {
                        instance_id: c.instance_id.clone(),
                        name: c.name.clone(),
                        version: c.version.clone(),
                        input: c.input.clone(),
                        parent_trace_context: None,
                    }),
                );
                e.router = a.router.clone();
                out.appended.push(e);
                out.children.push((a.id, c.clone(), a.router.clone()));
            }
            A::CompleteWorkflow(c) => {
                if c.workflow_status == CONTINUED_AS_NEW {
                    out.continue_as_new = Some((c.result.clone(), c.carryover_events.clone()));
                } else {
                    let status = match c.workflow_status {
                        COMPLETED | FAILED | TERMINATED | CANCELED => c.workflow_status,
                        other => {
                            return Err(format!(
                                "action {}: completing with status {other}, which is not a final status",
                                a.id
                            ));
                        }
                    };
                    let failure = c.failure_details.as_ref().map(Failure::of);
                    out.appended.push(event(
                        a.id,
                        now_ms,
                        E::ExecutionCompleted(dt::ExecutionCompletedEvent {
                            workflow_status: status,
                            result: c.result.clone(),
                            failure_details: c.failure_details.clone(),
                        }),
                    ));
                    out.completion = Some((status, c.result.clone(), failure));
                }
                // Whatever else the answer holds is moot once it ends.
                break;
            }
            A::WorkflowVersionNotAvailable(_) => {
                out.appended.push(event(
                    -1,
                    now_ms,
                    E::ExecutionStalled(dt::ExecutionStalledEvent {
                        reason: dt::StalledReason::VersionNotAvailable as i32,
                        description: Some(
                            "the worker has no version of this workflow that the history needs"
                                .into(),
                        ),
                    }),
                ));
                out.stalled = true;
                break;
            }
            A::SendEvent(_) | A::TerminateWorkflow(_) => {
                return Err(format!(
                    "action {}: sending events and terminating other instances from a workflow are not supported",
                    a.id
                ));
            }
        }
    }
    Ok(out)
}

/// A failed completion made by the sidecar (a worker's answer that did
/// not fit): the event and the failure kept in the metadata.
pub fn failed_by_sidecar(
    id: i32,
    now_ms: i64,
    error_type: &str,
    message: String,
) -> (dt::HistoryEvent, Failure) {
    let failure = Failure {
        error_type: error_type.into(),
        message,
        stack: None,
    };
    (
        event(
            id,
            now_ms,
            E::ExecutionCompleted(dt::ExecutionCompletedEvent {
                workflow_status: FAILED,
                result: None,
                failure_details: Some(failure.details()),
            }),
        ),
        failure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: i32, a: A) -> dt::WorkflowAction {
        dt::WorkflowAction {
            id,
            workflow_action_type: Some(a),
            router: None,
        }
    }

    fn task(name: &str) -> A {
        A::ScheduleTask(dt::ScheduleTaskAction {
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn actions_become_events_with_their_ids() {
        let resp = dt::WorkflowResponse {
            actions: vec![
                action(1, task("a")),
                action(
                    2,
                    A::CreateTimer(dt::CreateTimerAction {
                        fire_at: Some(ts(5_000)),
                        ..Default::default()
                    }),
                ),
            ],
            ..Default::default()
        };
        let out = apply(&[], &resp, 1_000).unwrap();
        assert_eq!(out.appended.len(), 2);
        assert_eq!(out.appended[0].event_id, 1);
        assert!(matches!(
            out.appended[1].event_type,
            Some(E::TimerCreated(_))
        ));
        assert_eq!(out.activities.len(), 1);
        assert_eq!(out.timers, vec![(2, 5_000)]);
        // The same id again in a later turn does not fit the history.
        let again = dt::WorkflowResponse {
            actions: vec![action(1, task("a"))],
            ..Default::default()
        };
        assert!(apply(&out.appended, &again, 2_000).is_err());
        // Twice in one answer neither.
        let twice = dt::WorkflowResponse {
            actions: vec![action(3, task("a")), action(3, task("b"))],
            ..Default::default()
        };
        assert!(apply(&[], &twice, 0).unwrap_err().contains("twice"));
    }

    #[test]
    fn a_completion_ends_the_answer() {
        let resp = dt::WorkflowResponse {
            actions: vec![
                action(
                    1,
                    A::CompleteWorkflow(dt::CompleteWorkflowAction {
                        workflow_status: COMPLETED,
                        result: Some("1".into()),
                        ..Default::default()
                    }),
                ),
                action(2, task("never")),
            ],
            ..Default::default()
        };
        let out = apply(&[], &resp, 0).unwrap();
        assert_eq!(out.completion, Some((COMPLETED, Some("1".into()), None)));
        assert!(out.activities.is_empty());
        let bad = dt::WorkflowResponse {
            actions: vec![action(
                1,
                A::CompleteWorkflow(dt::CompleteWorkflowAction {
                    workflow_status: RUNNING,
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        assert!(apply(&[], &bad, 0).is_err());
    }

    #[test]
    fn open_work_is_what_is_not_settled() {
        let h = vec![
            event(1, 0, E::TaskScheduled(Default::default())),
            event(2, 0, E::TaskScheduled(Default::default())),
            event(
                3,
                0,
                E::TimerCreated(dt::TimerCreatedEvent {
                    fire_at: Some(ts(9)),
                    ..Default::default()
                }),
            ),
            event(
                -1,
                0,
                E::TaskCompleted(dt::TaskCompletedEvent {
                    task_scheduled_id: 1,
                    ..Default::default()
                }),
            ),
        ];
        let inbox = vec![event(
            -1,
            0,
            E::TimerFired(dt::TimerFiredEvent {
                timer_id: 3,
                ..Default::default()
            }),
        )];
        let open = open_work(&h, &inbox);
        assert_eq!(
            open.activities.iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(open.timers.is_empty());
        let s = Settled::of(h.iter().chain(&inbox));
        assert!(s.repeats(&h[3]));
        assert!(s.repeats(&inbox[0]));
    }

    #[test]
    fn a_fork_keeps_what_came_before_and_reopens_the_target() {
        let task = |id: i32, input: &str| {
            event(
                id,
                0,
                E::TaskScheduled(dt::TaskScheduledEvent {
                    name: "a".into(),
                    input: Some(input.into()),
                    ..Default::default()
                }),
            )
        };
        let done = |id: i32| {
            event(
                -1,
                0,
                E::TaskCompleted(dt::TaskCompletedEvent {
                    task_scheduled_id: id,
                    ..Default::default()
                }),
            )
        };
        let h = vec![
            event(-1, 0, E::WorkflowStarted(Default::default())),
            task(1, "x"),
            done(1),
            task(2, "y"),
            done(2),
            task(3, "z"),
            done(3),
        ];
        let f = fork(&h, 2, "new", Some(Some("q".into())), None).unwrap();
        assert_eq!(f.len(), 4, "{f:?}");
        let Some(E::TaskScheduled(t)) = &f[3].event_type else {
            panic!("{f:?}")
        };
        assert_eq!((f[3].event_id, t.input.as_deref()), (2, Some("q")));
        assert_eq!(open_work(&f, &[]).activities.len(), 1);
        assert_eq!(
            fork(&h, 9, "new", None, None).unwrap_err().0,
            http::StatusCode::NOT_FOUND
        );
        assert_eq!(
            fork(&h, -1, "new", None, None).unwrap_err().0,
            http::StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn timestamps_round_trip_to_year_9999() {
        for ms in [0, 1, 999, 1_700_000_000_123, NEVER_MS + 999, -1] {
            assert_eq!(ms_of(&ts(ms)), ms);
        }
    }
}
