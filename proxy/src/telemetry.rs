//! Prometheus metrics of one sidecar, with Dapr's metric names where Dapr has
//! them so existing dashboards keep working. Each sidecar owns its registry.
//!
//! Label values that come from requests (target and caller app ids, HTTP
//! methods, gRPC method names) are bounded: the first `MAX_LABEL_VALUES`
//! distinct values of each are kept, later ones are counted as `_other`
//! (and HTTP methods outside the standard ones always are), so no caller
//! can grow the registry without end — daprd's most reported memory
//! problem.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// Latency buckets in milliseconds, fine-grained at the low end where a
/// sidecar's own overhead lives.
const LATENCY_MS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0, 10000.0,
];

/// Distinct values kept per request-derived label.
pub const MAX_LABEL_VALUES: usize = 256;

/// The label value counted for values past the bound.
pub const OTHER: &str = "_other";

/// The values seen of one label, up to the bound.
#[derive(Default)]
struct Bounded(std::sync::RwLock<std::collections::HashSet<Box<str>>>);

impl Bounded {
    fn value<'a>(&self, v: &'a str) -> &'a str {
        if self.0.read().expect("label lock").contains(v) {
            return v;
        }
        let mut seen = self.0.write().expect("label lock");
        if seen.contains(v) || seen.len() < MAX_LABEL_VALUES && seen.insert(v.into()) {
            v
        } else {
            OTHER
        }
    }
}

fn http_method(m: &str) -> &str {
    match m {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => m,
        _ => OTHER,
    }
}

pub struct Metrics {
    registry: Registry,
    app_id: String,
    apps: Bounded,
    methods: Bounded,
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    grpc_completed: IntCounterVec,
    grpc_latency: HistogramVec,
    components_loaded: IntCounterVec,
    component_init_failures: IntCounterVec,
    invoke_sent: IntCounterVec,
    invoke_received: IntCounterVec,
    invoke_latency: HistogramVec,
    served_received: IntCounterVec,
    served_sent: IntCounterVec,
    resiliency: IntCounterVec,
    breaker_state: IntGaugeVec,
    tls_handshakes: IntCounterVec,
    transparent_connections: IntCounterVec,
    transparent_bytes: IntCounterVec,
    reloads: IntCounterVec,
    generation: IntGaugeVec,
    jobs_created: IntCounterVec,
    jobs_triggered: IntCounterVec,
    jobs_failed: IntCounterVec,
    job_trigger_latency: HistogramVec,
    actors: [IntCounterVec; 7],
    actor_pending: IntGaugeVec,
    /// Workflow and activity names as label values (bounded: apps name them).
    workflow_names: Bounded,
    workflow_ops: IntCounterVec,
    workflow_op_latency: HistogramVec,
    workflow_runs: IntCounterVec,
    workflow_run_latency: HistogramVec,
    workflow_scheduling: HistogramVec,
    activity_runs: IntCounterVec,
    activity_run_latency: HistogramVec,
}

/// What happened to an actor, for the `dapr_runtime_actor_*` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorEvent {
    Activated,
    ActivationFailed,
    Deactivated,
    DeactivationFailed,
    Rebalanced,
    ReminderFired,
    TimerFired,
}

impl ActorEvent {
    const ALL: [ActorEvent; 7] = [
        ActorEvent::Activated,
        ActorEvent::ActivationFailed,
        ActorEvent::Deactivated,
        ActorEvent::DeactivationFailed,
        ActorEvent::Rebalanced,
        ActorEvent::ReminderFired,
        ActorEvent::TimerFired,
    ];

    fn metric(self) -> (&'static str, &'static str) {
        match self {
            ActorEvent::Activated => ("dapr_runtime_actor_activated_total", "Actors activated"),
            ActorEvent::ActivationFailed => (
                "dapr_runtime_actor_activated_failed_total",
                "Actor activations that failed",
            ),
            ActorEvent::Deactivated => {
                ("dapr_runtime_actor_deactivated_total", "Actors deactivated")
            }
            ActorEvent::DeactivationFailed => (
                "dapr_runtime_actor_deactivated_failed_total",
                "Actor deactivations the app failed",
            ),
            ActorEvent::Rebalanced => (
                "dapr_runtime_actor_reblanaced_total",
                "Actors let go because their owner changed",
            ),
            ActorEvent::ReminderFired => (
                "dapr_runtime_actor_reminders_fired_total",
                "Actor reminders fired",
            ),
            ActorEvent::TimerFired => (
                "dapr_runtime_actor_timers_fired_total",
                "Actor timers fired",
            ),
        }
    }
}

impl Metrics {
    pub fn new(app_id: &str) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_MS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            // Dapr's Scheduler service reports these; tandem has none, so
            // the sidecar that schedules or fires a job does.
            jobs_created: counter(
                "dapr_scheduler_jobs_created_total",
                "Jobs scheduled",
                &["app_id"],
            ),
            jobs_triggered: counter(
                "dapr_scheduler_jobs_triggered_total",
                "Job triggers the app took",
                &["app_id"],
            ),
            jobs_failed: counter(
                "dapr_scheduler_jobs_failed_total",
                "Job triggers the app failed",
                &["app_id"],
            ),
            job_trigger_latency: histogram(
                "dapr_scheduler_trigger_latency",
                "How late a job's trigger reached the app, in milliseconds",
                &["app_id"],
            ),
            // daprd's names (its `reblanaced` spelling included: dashboards
            // match it).
            actors: ActorEvent::ALL.map(|e| {
                let (name, help) = e.metric();
                counter(name, help, &["app_id", "actor_type"])
            }),
            actor_pending: gauge(
                "dapr_runtime_actor_pending_actor_calls",
                "Actor calls waiting for their actor's turn",
                &["app_id", "actor_type"],
            ),
            // daprd's workflow metrics, by its names and labels.
            workflow_names: Bounded::default(),
            workflow_ops: counter(
                "dapr_runtime_workflow_operation_count",
                "Workflow operation requests (create_workflow, get_workflow, add_event, purge_workflow), by status",
                &["app_id", "namespace", "operation", "status"],
            ),
            workflow_op_latency: histogram(
                "dapr_runtime_workflow_operation_latency",
                "Workflow operation latency in milliseconds",
                &["app_id", "namespace", "operation", "status"],
            ),
            workflow_runs: counter(
                "dapr_runtime_workflow_execution_count",
                "Workflow executions ended, by status (success, failed, terminated)",
                &["app_id", "namespace", "workflow_name", "status"],
            ),
            workflow_run_latency: histogram(
                "dapr_runtime_workflow_execution_latency",
                "Workflow start to end, in milliseconds",
                &["app_id", "namespace", "workflow_name", "status"],
            ),
            workflow_scheduling: histogram(
                "dapr_runtime_workflow_scheduling_latency",
                "Workflow start request to its first turn handed to a worker, in milliseconds",
                &["app_id", "namespace", "workflow_name"],
            ),
            activity_runs: counter(
                "dapr_runtime_workflow_activity_execution_count",
                "Activity executions ended, by status (success, failed)",
                &["app_id", "namespace", "activity_name", "status"],
            ),
            activity_run_latency: histogram(
                "dapr_runtime_workflow_activity_execution_latency",
                "Activity handed out to its result recorded, in milliseconds",
                &["app_id", "namespace", "activity_name", "status"],
            ),
            http_requests: counter(
                "dapr_http_server_request_count",
                "HTTP requests served by the Dapr API",
                &["app_id", "method", "status"],
            ),
            http_latency: histogram(
                "dapr_http_server_latency",
                "HTTP API latency in milliseconds",
                &["app_id", "method", "status"],
            ),
            grpc_completed: counter(
                "dapr_grpc_io_server_completed_rpcs",
                "gRPC calls completed by the Dapr API",
                &["app_id", "grpc_server_method", "grpc_server_status"],
            ),
            grpc_latency: histogram(
                "dapr_grpc_io_server_server_latency",
                "gRPC API latency in milliseconds",
                &["app_id", "grpc_server_method", "grpc_server_status"],
            ),
            components_loaded: counter(
                "dapr_runtime_component_loaded",
                "Components initialised",
                &["app_id"],
            ),
            component_init_failures: counter(
                "dapr_runtime_component_init_fail_total",
                "Components that failed to initialise",
                &["app_id", "component", "reason"],
            ),
            invoke_sent: counter(
                "dapr_service_invocation_req_sent_total",
                "Invocations sent to other apps",
                &["app_id", "dest_app_id", "type"],
            ),
            invoke_received: counter(
                "dapr_service_invocation_res_recv_total",
                "Invocation answers received (status `error` when none came)",
                &["app_id", "dest_app_id", "type", "status"],
            ),
            invoke_latency: histogram(
                "dapr_service_invocation_res_recv_latency_ms",
                "Invocation latency in milliseconds, as the caller's sidecar sees it",
                &["app_id", "dest_app_id", "type", "status"],
            ),
            served_received: counter(
                "dapr_service_invocation_req_recv_total",
                "Invocations received from other apps' sidecars",
                &["app_id", "src_app_id", "type"],
            ),
            served_sent: counter(
                "dapr_service_invocation_res_sent_total",
                "Answers to invocations from other apps' sidecars",
                &["app_id", "src_app_id", "type", "status"],
            ),
            resiliency: counter(
                "dapr_resiliency_activations_total",
                "Times a resiliency policy acted: a retry, a timeout, a call refused by an open circuit breaker, a breaker changing state",
                &["app_id", "flow_direction", "target", "policy", "status"],
            ),
            breaker_state: gauge(
                "tandem_resiliency_circuit_breaker_state",
                "Circuit breaker state per target: 0 closed, 1 half-open, 2 open",
                &["app_id", "flow_direction", "target"],
            ),
            tls_handshakes: counter(
                "tandem_mtls_handshakes_total",
                "mTLS handshakes between sidecars, by side (client, server) and result (ok, failed)",
                &["app_id", "side", "result"],
            ),
            transparent_connections: counter(
                "tandem_transparent_connections_total",
                "Connections taken by transparent mode's doors, by direction (outbound, inbound) and route (mesh: HTTP by app name; tunnel: TCP over mTLS to a mesh host; passthrough: to the original destination untouched; refused)",
                &["app_id", "direction", "route"],
            ),
            transparent_bytes: counter(
                "tandem_transparent_bytes_total",
                "Bytes copied by transparent mode for tunnelled and passed-through TCP, by direction, route and flow (sent: from the client, received: to it)",
                &["app_id", "direction", "route", "flow"],
            ),
            reloads: counter(
                "tandem_reload_total",
                "Reloads of resources and configuration, by result (applied, refused)",
                &["app_id", "result"],
            ),
            generation: gauge(
                "tandem_config_generation",
                "The generation of resources and configuration serving (1 at start, one more per applied change)",
                &["app_id"],
            ),
            registry,
            app_id: app_id.to_string(),
            apps: Bounded::default(),
            methods: Bounded::default(),
        }
    }

    /// One reload and the generation serving after it.
    pub fn reload(&self, applied: bool, generation: u64) {
        self.reloads
            .with_label_values(&[
                self.app_id.as_str(),
                if applied { "applied" } else { "refused" },
            ])
            .inc();
        self.generation
            .with_label_values(&[self.app_id.as_str()])
            .set(generation as i64);
    }

    /// A connection a transparent door took, and where it went.
    pub fn transparent_connection(&self, direction: &str, route: &str) {
        self.transparent_connections
            .with_label_values(&[self.app_id.as_str(), direction, route])
            .inc();
    }

    /// Bytes a transparent door copied for one connection: `sent` from
    /// the client, `received` back to it.
    pub fn transparent_bytes(&self, direction: &str, route: &str, sent: u64, received: u64) {
        for (flow, n) in [("sent", sent), ("received", received)] {
            self.transparent_bytes
                .with_label_values(&[self.app_id.as_str(), direction, route, flow])
                .inc_by(n);
        }
    }

    /// What a resiliency policy did (`crate::resilience::Observer`).
    pub fn resiliency(&self, target: &str, direction: &str, what: crate::resilience::Activation) {
        use crate::resilience::{Activation, BreakerState};
        let (policy, status) = match what {
            Activation::Retry => ("retry", ""),
            Activation::Timeout => ("timeout", ""),
            Activation::BreakerRejected => ("circuitbreaker", "open"),
            Activation::BreakerState(state) => {
                self.breaker_state
                    .with_label_values(&[self.app_id.as_str(), direction, target])
                    .set(match state {
                        BreakerState::Closed => 0,
                        BreakerState::HalfOpen => 1,
                        BreakerState::Open => 2,
                    });
                ("circuitbreaker", state.as_str())
            }
        };
        self.resiliency
            .with_label_values(&[self.app_id.as_str(), direction, target, policy, status])
            .inc();
    }

    pub fn tls_handshake(&self, side: &str, ok: bool) {
        self.tls_handshakes
            .with_label_values(&[self.app_id.as_str(), side, if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// One invocation served for `src` (another app's sidecar) and the
    /// status it got (the gRPC status for proxied gRPC calls).
    pub fn served(&self, src: &str, kind: &str, status: &str) {
        let src = self.apps.value(src);
        self.served_received
            .with_label_values(&[self.app_id.as_str(), src, kind])
            .inc();
        self.served_sent
            .with_label_values(&[self.app_id.as_str(), src, kind, status])
            .inc();
    }

    /// One invocation of `dest` (`type` http or grpc) and how it ended:
    /// the app's status code, or `error` when no answer came.
    pub fn invocation(&self, dest: &str, kind: &str, status: &str, elapsed: Duration) {
        let dest = self.apps.value(dest);
        self.invoke_sent
            .with_label_values(&[self.app_id.as_str(), dest, kind])
            .inc();
        let labels = [self.app_id.as_str(), dest, kind, status];
        self.invoke_received.with_label_values(&labels).inc();
        self.invoke_latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    pub fn actor(&self, event: ActorEvent, actor_type: &str) {
        let i = ActorEvent::ALL
            .iter()
            .position(|e| *e == event)
            .expect("every event is listed");
        self.actors[i]
            .with_label_values(&[self.app_id.as_str(), actor_type])
            .inc();
    }

    /// A workflow operation (`create_workflow`, `get_workflow`,
    /// `add_event`, `purge_workflow`) answered.
    pub fn workflow_operation(&self, namespace: &str, op: &str, ok: bool, elapsed: Duration) {
        let labels = [
            self.app_id.as_str(),
            namespace,
            op,
            if ok { "success" } else { "failed" },
        ];
        self.workflow_ops.with_label_values(&labels).inc();
        self.workflow_op_latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    /// A workflow ended (`success`, `failed`, `terminated`) after `ran`.
    pub fn workflow_execution(&self, namespace: &str, name: &str, status: &str, ran: Duration) {
        let labels = [
            self.app_id.as_str(),
            namespace,
            self.workflow_names.value(name),
            status,
        ];
        self.workflow_runs.with_label_values(&labels).inc();
        self.workflow_run_latency
            .with_label_values(&labels)
            .observe(ran.as_secs_f64() * 1000.0);
    }

    /// A workflow's first turn was handed out `after` its start.
    pub fn workflow_scheduling(&self, namespace: &str, name: &str, after: Duration) {
        self.workflow_scheduling
            .with_label_values(&[
                self.app_id.as_str(),
                namespace,
                self.workflow_names.value(name),
            ])
            .observe(after.as_secs_f64() * 1000.0);
    }

    /// An activity's result was recorded `after` it was handed out.
    pub fn workflow_activity(&self, namespace: &str, name: &str, ok: bool, after: Duration) {
        let labels = [
            self.app_id.as_str(),
            namespace,
            self.workflow_names.value(name),
            if ok { "success" } else { "failed" },
        ];
        self.activity_runs.with_label_values(&labels).inc();
        self.activity_run_latency
            .with_label_values(&labels)
            .observe(after.as_secs_f64() * 1000.0);
    }

    /// Calls waiting for an actor's turn: `delta` more (or fewer).
    pub fn actor_pending(&self, actor_type: &str, delta: i64) {
        self.actor_pending
            .with_label_values(&[self.app_id.as_str(), actor_type])
            .add(delta);
    }

    pub fn job_created(&self) {
        self.jobs_created.with_label_values(&[&self.app_id]).inc();
    }

    /// A trigger's outcome and how late it was (from its due time to the
    /// app's answer).
    pub fn job_fired(&self, ok: bool, late: Duration) {
        let labels = [self.app_id.as_str()];
        if ok {
            self.jobs_triggered.with_label_values(&labels).inc();
        } else {
            self.jobs_failed.with_label_values(&labels).inc();
        }
        self.job_trigger_latency
            .with_label_values(&labels)
            .observe(late.as_secs_f64() * 1000.0);
    }

    pub fn http_request(&self, method: &str, status: u16, elapsed: Duration) {
        let method = http_method(method);
        let status = status.to_string();
        let labels = [self.app_id.as_str(), method, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    pub fn grpc_call(&self, method: &str, status: &str, elapsed: Duration) {
        let method = self.methods.value(method);
        let labels = [self.app_id.as_str(), method, status];
        self.grpc_completed.with_label_values(&labels).inc();
        self.grpc_latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    pub fn component_loaded(&self) {
        self.components_loaded
            .with_label_values(&[&self.app_id])
            .inc();
    }

    pub fn component_init_failed(&self, component: &str, reason: &str) {
        self.component_init_failures
            .with_label_values(&[&self.app_id, component, reason])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// The `grpc-status` in `h` (the headers of a trailers-only answer, or
/// trailers), when there is a number there.
pub fn grpc_status_of(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The gRPC status names Dapr's metrics use (`OK`, `NOT_FOUND`, …).
pub fn grpc_status_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers choosing app ids, methods and verbs cannot grow the registry
    /// past the bound.
    #[test]
    fn request_derived_labels_are_bounded() {
        let m = Metrics::new("me");
        for i in 0..2000 {
            let id = format!("app-{i}");
            m.invocation(&id, "http", "200", Duration::from_millis(1));
            m.served(&id, "http", "200");
            m.grpc_call(&format!("/pkg.Svc/M{i}"), "OK", Duration::from_millis(1));
            m.http_request(&format!("VERB{i}"), 200, Duration::from_millis(1));
        }
        let text = m.render();
        let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        assert!(series("dapr_service_invocation_req_sent_total") <= MAX_LABEL_VALUES + 1);
        assert!(text.contains("app-0\""), "the first values are kept");
        assert!(
            text.contains(&format!("\"{OTHER}\"")),
            "later ones fold into {OTHER}"
        );
        assert!(
            !text.contains("VERB7"),
            "unknown HTTP verbs are never labels"
        );
        assert!(series("dapr_grpc_io_server_completed_rpcs") <= MAX_LABEL_VALUES + 1);
        assert!(series("dapr_service_invocation_req_recv_total") <= MAX_LABEL_VALUES + 1);
    }
}

/// How a streamed exchange ended, as `Finished` reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    /// The body ended; the gRPC status its trailers carried, if any.
    Complete(Option<i32>),
    /// The body failed while it was read.
    Failed,
    /// The body was dropped before its end (the caller hung up).
    Dropped,
}

impl End {
    /// The gRPC status name for the metrics: a body that ended without a
    /// status is `UNKNOWN` (the gRPC spec's reading), one cut off
    /// `CANCELLED`.
    pub fn grpc_status(self) -> &'static str {
        match self {
            End::Complete(Some(code)) => grpc_status_name(code),
            End::Complete(None) | End::Failed => "UNKNOWN",
            End::Dropped => "CANCELLED",
        }
    }
}

type OnEnd = Box<dyn FnOnce(End) + Send>;

/// A response body that reports, once, how the exchange ended — with the
/// `grpc-status` of its trailers — when its stream ends, fails or is
/// dropped: spans and metrics of a streamed call are recorded when it is
/// over, not when its headers arrive.
pub struct Finished<B> {
    inner: B,
    on_end: Option<OnEnd>,
}

impl<B> Finished<B> {
    pub fn new(inner: B, on_end: impl FnOnce(End) + Send + 'static) -> Self {
        Self {
            inner,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn end(&mut self, how: End) {
        if let Some(f) = self.on_end.take() {
            f(how);
        }
    }
}

impl<B> Drop for Finished<B> {
    fn drop(&mut self) {
        self.end(End::Dropped);
    }
}

impl<B> http_body::Body for Finished<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    self.end(End::Complete(grpc_status_of(t)));
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(End::Failed),
            Poll::Ready(None) => self.end(End::Complete(None)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
