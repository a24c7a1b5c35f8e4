//! `TaskHubSidecarService` on the Dapr gRPC port: the durabletask
//! protocol of the Dapr workflow SDKs (docs/notes/workflow-wire.md).

use super::{Workflows, err, history, status_name};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tandem_proto::durabletask as dt;
use tandem_proto::durabletask::task_hub_sidecar_service_server::TaskHubSidecarService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Work items queued for one worker before the engine passes it over.
const WORKER_BUFFER: usize = 256;
/// The longest instance id (Dapr's rule for ids users choose).
pub const MAX_ID: usize = 256;

pub struct TaskHub {
    rt: Arc<Runtime>,
}

impl TaskHub {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        crate::api::grpc::authorize(&self.rt, req)
    }

    async fn run<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Request<Req>,
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Arc<Workflows>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ApiError>>,
    {
        let start = Instant::now();
        let result = match self.authorize(&req) {
            Ok(()) => match engine(&self.rt).await {
                Ok(w) => handler(w, req.into_inner())
                    .await
                    .map(Response::new)
                    .map_err(|e| e.to_status()),
                Err(e) => Err(e.to_status()),
            },
            Err(s) => Err(s),
        };
        let code = result.as_ref().err().map_or(0, |s| s.code() as i32);
        self.rt.metrics.grpc_call(
            method,
            tandem_proxy::telemetry::grpc_status_name(code),
            start.elapsed(),
        );
        result
    }
}

pub async fn engine(rt: &Runtime) -> Result<Arc<Workflows>, ApiError> {
    Workflows::of(rt).await
}

/// Checks an instance id given by a caller.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "ERR_INSTANCE_ID_PROVIDED_MISSING",
            "no instance ID was provided",
        ));
    }
    if id.len() > MAX_ID || id.contains("||") || id.chars().any(char::is_control) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "ERR_INSTANCE_ID_INVALID",
            format!(
                "workflow instance ID `{}` is not allowed: at most {MAX_ID} bytes, no `||`, no control characters",
                id.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// Removes the engine's worker when its stream ends, however it ends.
struct Connected {
    w: Arc<Workflows>,
    worker: u64,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.w.hub.disconnect(self.worker);
        tracing::info!(
            workers = self.w.hub.workers(),
            "workflows: a worker disconnected"
        );
    }
}

type WorkStream = Pin<Box<dyn Stream<Item = Result<dt::WorkItem, Status>> + Send + 'static>>;

fn completed(s: Option<&dt::WorkflowState>) -> bool {
    s.is_some_and(|s| history::is_terminal(s.workflow_status))
}

fn started(s: Option<&dt::WorkflowState>) -> bool {
    s.is_some_and(|s| s.workflow_status != history::PENDING)
}

fn answer(s: Option<dt::WorkflowState>) -> dt::GetInstanceResponse {
    dt::GetInstanceResponse {
        exists: s.is_some(),
        workflow_state: s,
    }
}

#[tonic::async_trait]
impl TaskHubSidecarService for TaskHub {
    async fn hello(&self, req: Request<()>) -> Result<Response<()>, Status> {
        self.run("Hello", req, |_, ()| async { Ok(()) }).await
    }

    async fn start_instance(
        &self,
        req: Request<dt::CreateInstanceRequest>,
    ) -> Result<Response<dt::CreateInstanceResponse>, Status> {
        let caller = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.run("StartInstance", req, |w, r| async move {
            let mut r = r;
            if r.instance_id.is_empty() {
                r.instance_id = uuid::Uuid::new_v4().simple().to_string();
            }
            check_id(&r.instance_id)?;
            if r.name.is_empty() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "ERR_WORKFLOW_NAME_MISSING",
                    "workflow name is not configured",
                ));
            }
            let instance_id = w.start(r, caller).await?;
            Ok(dt::CreateInstanceResponse { instance_id })
        })
        .await
    }

    async fn get_instance(
        &self,
        req: Request<dt::GetInstanceRequest>,
    ) -> Result<Response<dt::GetInstanceResponse>, Status> {
        self.run("GetInstance", req, |w, r| async move {
            check_id(&r.instance_id)?;
            Ok(answer(
                w.get(&r.instance_id, r.get_inputs_and_outputs).await?,
            ))
        })
        .await
    }

    async fn wait_for_instance_start(
        &self,
        req: Request<dt::GetInstanceRequest>,
    ) -> Result<Response<dt::GetInstanceResponse>, Status> {
        self.run("WaitForInstanceStart", req, |w, r| async move {
            check_id(&r.instance_id)?;
            Ok(answer(
                w.wait(&r.instance_id, r.get_inputs_and_outputs, started)
                    .await?,
            ))
        })
        .await
    }

    async fn wait_for_instance_completion(
        &self,
        req: Request<dt::GetInstanceRequest>,
    ) -> Result<Response<dt::GetInstanceResponse>, Status> {
        self.run("WaitForInstanceCompletion", req, |w, r| async move {
            check_id(&r.instance_id)?;
            Ok(answer(
                w.wait(&r.instance_id, r.get_inputs_and_outputs, completed)
                    .await?,
            ))
        })
        .await
    }

    async fn raise_event(
        &self,
        req: Request<dt::RaiseEventRequest>,
    ) -> Result<Response<dt::RaiseEventResponse>, Status> {
        self.run("RaiseEvent", req, |w, r| async move {
            check_id(&r.instance_id)?;
            if r.name.is_empty() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "ERR_WORKFLOW_EVENT_NAME_MISSING",
                    "missing workflow event name",
                ));
            }
            w.raise(&r.instance_id, &r.name, r.input).await?;
            Ok(dt::RaiseEventResponse {})
        })
        .await
    }

    async fn terminate_instance(
        &self,
        req: Request<dt::TerminateRequest>,
    ) -> Result<Response<dt::TerminateResponse>, Status> {
        self.run("TerminateInstance", req, |w, r| async move {
            check_id(&r.instance_id)?;
            w.terminate(&r.instance_id, r.output, r.recursive).await?;
            Ok(dt::TerminateResponse {})
        })
        .await
    }

    async fn suspend_instance(
        &self,
        req: Request<dt::SuspendRequest>,
    ) -> Result<Response<dt::SuspendResponse>, Status> {
        self.run("SuspendInstance", req, |w, r| async move {
            check_id(&r.instance_id)?;
            w.suspend(&r.instance_id, r.reason).await?;
            Ok(dt::SuspendResponse {})
        })
        .await
    }

    async fn resume_instance(
        &self,
        req: Request<dt::ResumeRequest>,
    ) -> Result<Response<dt::ResumeResponse>, Status> {
        self.run("ResumeInstance", req, |w, r| async move {
            check_id(&r.instance_id)?;
            w.resume(&r.instance_id, r.reason).await?;
            Ok(dt::ResumeResponse {})
        })
        .await
    }

    async fn purge_instances(
        &self,
        req: Request<dt::PurgeInstancesRequest>,
    ) -> Result<Response<dt::PurgeInstancesResponse>, Status> {
        self.run("PurgeInstances", req, |w, r| async move {
            let id = match r.request {
                Some(dt::purge_instances_request::Request::InstanceId(id)) => id,
                Some(dt::purge_instances_request::Request::PurgeInstanceFilter(_)) => {
                    return Err(err(
                        StatusCode::NOT_IMPLEMENTED,
                        "ERR_PURGE_WORKFLOW",
                        "purging by filter is not supported; purge instances by id",
                    ));
                }
                None => String::new(),
            };
            check_id(&id)?;
            let n = w.purge(&id, r.recursive).await?;
            Ok(dt::PurgeInstancesResponse {
                deleted_instance_count: n,
                is_complete: Some(true),
            })
        })
        .await
    }

    async fn list_instance_i_ds(
        &self,
        req: Request<dt::ListInstanceIDsRequest>,
    ) -> Result<Response<dt::ListInstanceIDsResponse>, Status> {
        let rt = self.rt.clone();
        let r = self
            .run("ListInstanceIDs", req, |w, r| async move {
                super::store::list(
                    &rt,
                    &w.actor_type,
                    r.page_size,
                    r.continuation_token.as_deref(),
                )
                .await
            })
            .await?
            .into_inner();
        match r {
            Some((instance_ids, continuation_token)) => {
                Ok(Response::new(dt::ListInstanceIDsResponse {
                    instance_ids,
                    continuation_token,
                }))
            }
            None => Err(Status::unimplemented(
                "listing workflow instances needs an actor state store with the query API (state.sqlite, state.postgresql); this one has none",
            )),
        }
    }

    async fn get_instance_history(
        &self,
        req: Request<dt::GetInstanceHistoryRequest>,
    ) -> Result<Response<dt::GetInstanceHistoryResponse>, Status> {
        self.run("GetInstanceHistory", req, |w, r| async move {
            check_id(&r.instance_id)?;
            Ok(dt::GetInstanceHistoryResponse {
                events: w.history(&r.instance_id).await?,
            })
        })
        .await
    }

    async fn rerun_workflow_from_event(
        &self,
        req: Request<dt::RerunWorkflowFromEventRequest>,
    ) -> Result<Response<dt::RerunWorkflowFromEventResponse>, Status> {
        self.run("RerunWorkflowFromEvent", req, |w, r| async move {
            check_id(&r.source_instance_id)?;
            if let Some(id) = r.new_instance_id.as_deref().filter(|i| !i.is_empty()) {
                check_id(id)?;
            }
            let new_instance_id = w.rerun(r).await?;
            Ok(dt::RerunWorkflowFromEventResponse { new_instance_id })
        })
        .await
    }

    type GetWorkItemsStream = WorkStream;

    async fn get_work_items(
        &self,
        req: Request<dt::GetWorkItemsRequest>,
    ) -> Result<Response<WorkStream>, Status> {
        self.authorize(&req)?;
        let w = engine(&self.rt).await.map_err(|e| e.to_status())?;
        let (tx, rx) = tokio::sync::mpsc::channel(WORKER_BUFFER);
        let worker = w.hub.connect(tx);
        tracing::info!(workers = w.hub.workers(), "workflows: a worker connected");
        let stream: WorkStream = Box::pin(WorkItems {
            rx: tokio_stream::wrappers::ReceiverStream::new(rx),
            _connected: Connected { w, worker },
        });
        Ok(Response::new(stream))
    }

    async fn complete_activity_task(
        &self,
        req: Request<dt::ActivityResponse>,
    ) -> Result<Response<dt::CompleteTaskResponse>, Status> {
        self.run("CompleteActivityTask", req, |w, r| async move {
            w.activity_done(r).await?;
            Ok(dt::CompleteTaskResponse {})
        })
        .await
    }

    async fn complete_orchestrator_task(
        &self,
        req: Request<dt::WorkflowResponse>,
    ) -> Result<Response<dt::CompleteTaskResponse>, Status> {
        self.run("CompleteOrchestratorTask", req, |w, r| async move {
            w.turn_done(r).await?;
            Ok(dt::CompleteTaskResponse {})
        })
        .await
    }

    async fn complete_workflow_task(
        &self,
        req: Request<dt::WorkflowResponse>,
    ) -> Result<Response<dt::CompleteTaskResponse>, Status> {
        self.run("CompleteWorkflowTask", req, |w, r| async move {
            w.turn_done(r).await?;
            Ok(dt::CompleteTaskResponse {})
        })
        .await
    }
}

/// A worker's stream of work items; dropped (the worker went away) it
/// gives back what the worker held.
struct WorkItems {
    rx: tokio_stream::wrappers::ReceiverStream<Result<dt::WorkItem, Status>>,
    _connected: Connected,
}

impl Stream for WorkItems {
    type Item = Result<dt::WorkItem, Status>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// A workflow's status name as Dapr's API shows it.
pub fn runtime_status(status: i32) -> &'static str {
    match status {
        history::STALLED => "UNKNOWN",
        s => status_name(s),
    }
}
