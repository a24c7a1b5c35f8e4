//! The workflows page's data: a sidecar's instances (ListInstanceIDs,
//! then GetInstance for each) and one instance's history
//! (GetInstanceHistory), over the sidecar's existing gRPC API, the same
//! calls the Dapr SDKs' workflow clients make.

use dt::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use serde_json::{Value, json};
use std::time::Duration;
use tandem_proto::durabletask as dt;
use tonic::transport::Channel;

/// At most this many instances are listed (newest pages are not
/// ordered by the API: the first ones it gives).
const MAX_INSTANCES: usize = 200;
/// Pages of ids asked for at most.
const MAX_PAGES: usize = 10;
/// Instances read at once.
const AT_ONCE: usize = 16;

type Client = TaskHubSidecarServiceClient<Channel>;

async fn client(host: &str, port: u16) -> Result<Client, String> {
    let authority = super::collect::authority(host, port);
    let ch = Channel::from_shared(format!("http://{authority}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("the sidecar's gRPC API on {authority} does not answer: {e}"))?;
    // gRPC's default 4 MiB a message: one instance with its payloads
    // (failed ones only) fits, and a hostile answer stays small.
    Ok(TaskHubSidecarServiceClient::new(ch))
}

fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token.and_then(|t| t.parse().ok()) {
        r.metadata_mut().insert("dapr-api-token", t);
    }
    r
}

fn status_error(what: &str, s: tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unauthenticated => format!(
            "{what}: the sidecar needs an API token (give --api-token or DAPR_API_TOKEN): {}",
            s.message()
        ),
        _ => format!("{what}: {} ({:?})", s.message(), s.code()),
    }
}

pub fn status_name(code: i32) -> &'static str {
    match dt::OrchestrationStatus::try_from(code) {
        Ok(dt::OrchestrationStatus::Running) => "RUNNING",
        Ok(dt::OrchestrationStatus::Completed) => "COMPLETED",
        Ok(dt::OrchestrationStatus::ContinuedAsNew) => "CONTINUED_AS_NEW",
        Ok(dt::OrchestrationStatus::Failed) => "FAILED",
        Ok(dt::OrchestrationStatus::Canceled) => "CANCELED",
        Ok(dt::OrchestrationStatus::Terminated) => "TERMINATED",
        Ok(dt::OrchestrationStatus::Pending) => "PENDING",
        Ok(dt::OrchestrationStatus::Suspended) => "SUSPENDED",
        Ok(dt::OrchestrationStatus::Stalled) => "STALLED",
        Err(_) => "UNKNOWN",
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) if t.seconds > 0 => json!(tandem_control::clock::rfc3339_utc(
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000)
        )),
        _ => Value::Null,
    }
}

/// The instances a sidecar's workflow engine holds, with their state.
pub async fn list(host: &str, port: u16, token: Option<&str>) -> Result<Value, String> {
    let mut c = client(host, port).await?;
    let mut ids = Vec::new();
    let mut token_page: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = match c
            .list_instance_i_ds(request(
                dt::ListInstanceIDsRequest {
                    continuation_token: token_page.clone(),
                    page_size: Some(100),
                },
                token,
            ))
            .await
        {
            Ok(p) => p.into_inner(),
            // No actor state store, or one without the query API: this
            // sidecar cannot list workflows, which is not a fault.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
                ) =>
            {
                return Ok(json!({ "instances": [], "unavailable": s.message() }));
            }
            Err(s) => return Err(status_error("listing workflow instances", s)),
        };
        ids.extend(page.instance_ids);
        pages += 1;
        let next = page.continuation_token.filter(|t| !t.is_empty());
        // A sidecar that pages forever (or in a circle) is not followed.
        let same = next.is_some() && next == token_page;
        token_page = next;
        if token_page.is_none() || ids.len() >= MAX_INSTANCES || pages >= MAX_PAGES || same {
            break;
        }
    }
    let more = token_page.is_some();
    ids.truncate(MAX_INSTANCES);
    let token = token.map(String::from);
    let reads = ids
        .into_iter()
        .map(|id| read_one(c.clone(), id, token.clone()));
    use futures_util::StreamExt;
    let mut instances: Vec<Value> = futures_util::stream::iter(reads)
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    instances.sort_by(|a, b| {
        b["created"]
            .as_str()
            .cmp(&a["created"].as_str())
            .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
    });
    Ok(json!({ "instances": instances, "more": more }))
}

/// One instance's state, as the list shows it.
async fn read_one(c: Client, id: String, token: Option<String>) -> Value {
    let get = |payloads: bool| {
        let mut c = c.clone();
        let req = request(
            dt::GetInstanceRequest {
                instance_id: id.clone(),
                get_inputs_and_outputs: payloads,
                router: None,
            },
            token.as_deref(),
        );
        async move { c.get_instance(req).await.map(tonic::Response::into_inner) }
    };
    // Payloads (inputs, outputs, failure details) come only with inputs
    // and outputs, as daprd gives them: asked again for the failed ones
    // only, so a list of big inputs stays small.
    let mut r = get(false).await;
    if let Ok(first) = &r {
        let failed = first
            .workflow_state
            .as_ref()
            .is_some_and(|s| s.workflow_status == dt::OrchestrationStatus::Failed as i32);
        if failed {
            r = get(true).await.or(r);
        }
    }
    match r {
        Ok(r) => {
            let st = r.workflow_state.unwrap_or_default();
            json!({
                "id": id,
                "exists": r.exists,
                "name": st.name,
                "status": status_name(st.workflow_status),
                "created": time(&st.created_timestamp),
                "updated": time(&st.last_updated_timestamp),
                "failure": st.failure_details.map(|f| format!("{}: {}", f.error_type, f.error_message)),
                "parent": st.parent_instance_id,
            })
        }
        Err(s) => json!({ "id": id, "error": status_error("reading", s) }),
    }
}

/// One instance's history, one line per event.
pub async fn history(
    host: &str,
    port: u16,
    token: Option<&str>,
    id: &str,
) -> Result<Value, String> {
    let mut c = client(host, port).await?;
    let events = c
        .get_instance_history(request(
            dt::GetInstanceHistoryRequest {
                instance_id: id.to_string(),
            },
            token,
        ))
        .await
        .map_err(|s| status_error("reading the history", s))?
        .into_inner()
        .events;
    let lines: Vec<Value> = events
        .iter()
        .map(|e| {
            let (kind, detail) = describe(e);
            json!({ "id": e.event_id, "at": time(&e.timestamp), "kind": kind, "detail": detail })
        })
        .collect();
    Ok(json!({ "id": id, "events": lines }))
}

fn describe(e: &dt::HistoryEvent) -> (&'static str, String) {
    use dt::history_event::EventType as E;
    let failure = |f: &Option<dt::TaskFailureDetails>| {
        f.as_ref()
            .map(|f| format!("{}: {}", f.error_type, f.error_message))
            .unwrap_or_default()
    };
    match &e.event_type {
        Some(E::ExecutionStarted(x)) => ("ExecutionStarted", x.name.clone()),
        Some(E::ExecutionCompleted(x)) => (
            "ExecutionCompleted",
            format!(
                "{} {}",
                status_name(x.workflow_status),
                failure(&x.failure_details)
            )
            .trim()
            .to_string(),
        ),
        Some(E::ExecutionTerminated(_)) => ("ExecutionTerminated", String::new()),
        Some(E::TaskScheduled(x)) => ("TaskScheduled", x.name.clone()),
        Some(E::TaskCompleted(x)) => ("TaskCompleted", format!("task {}", x.task_scheduled_id)),
        Some(E::TaskFailed(x)) => (
            "TaskFailed",
            format!(
                "task {} {}",
                x.task_scheduled_id,
                failure(&x.failure_details)
            ),
        ),
        Some(E::ChildWorkflowInstanceCreated(x)) => (
            "ChildWorkflowInstanceCreated",
            format!("{} ({})", x.name, x.instance_id),
        ),
        Some(E::ChildWorkflowInstanceCompleted(_)) => {
            ("ChildWorkflowInstanceCompleted", String::new())
        }
        Some(E::ChildWorkflowInstanceFailed(x)) => {
            ("ChildWorkflowInstanceFailed", failure(&x.failure_details))
        }
        Some(E::TimerCreated(x)) => (
            "TimerCreated",
            time(&x.fire_at).as_str().unwrap_or_default().to_string(),
        ),
        Some(E::TimerFired(_)) => ("TimerFired", String::new()),
        Some(E::WorkflowStarted(_)) => ("WorkflowStarted", String::new()),
        Some(E::WorkflowCompleted(_)) => ("WorkflowCompleted", String::new()),
        Some(E::EventSent(x)) => ("EventSent", format!("{} → {}", x.name, x.instance_id)),
        Some(E::EventRaised(x)) => ("EventRaised", x.name.clone()),
        Some(E::ContinueAsNew(_)) => ("ContinueAsNew", String::new()),
        Some(E::ExecutionSuspended(_)) => ("ExecutionSuspended", String::new()),
        Some(E::ExecutionResumed(_)) => ("ExecutionResumed", String::new()),
        Some(E::ExecutionStalled(_)) => ("ExecutionStalled", String::new()),
        None => ("Unknown", String::new()),
    }
}
