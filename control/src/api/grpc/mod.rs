//! The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`) on tonic. Each RPC checks
//! the API token, calls the shared building-block logic and records metrics.
//! RPCs of building blocks tandem does not have yet answer UNIMPLEMENTED with
//! a Dapr `ErrorInfo`, at once.

mod actors;
mod conversation;
mod crypto;
mod jobs;
pub(crate) mod proxy;
mod workflows;

use crate::api::state::{SaveItem, TxItem};
use crate::api::{metadata, pubsub, secrets, state};
use crate::error::ApiError;
use crate::runtime::Runtime;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tandem_proto::common::v1 as common;
use tandem_proto::runtime::v1 as rt;
use tandem_proto::runtime::v1::dapr_server::{Dapr, DaprServer};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct DaprApi {
    rt: Arc<Runtime>,
}

/// A text value of the call's metadata (`traceparent`, `tracestate`).
fn metadata_str<T>(req: &Request<T>, key: &str) -> Option<String> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The `dapr-api-token` check of every gRPC service the sidecar serves
/// (Dapr's, the workflow protocol's): daprd's UNAUTHENTICATED error.
pub(crate) fn authorize<T>(rt: &Runtime, req: &Request<T>) -> Result<(), Status> {
    let given = req.metadata().get("dapr-api-token").map(|v| v.as_bytes());
    if rt.api_token_ok(given) {
        Ok(())
    } else {
        Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            "ERR_UNAUTHENTICATED",
            "Unauthorized",
        )
        .with_reason("DAPR_API_TOKEN_INVALID")
        .to_status())
    }
}

impl DaprApi {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }

    /// Token check, first thing in every RPC. No exemptions on gRPC.
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        authorize(&self.rt, req)
    }

    /// Configuration `spec.api` allow/deny lists, by API group.
    fn api_allowed(&self, method: &str) -> Result<(), Status> {
        let snap = self.rt.snapshot();
        let Some(api) = &snap.configuration.spec.api else {
            return Ok(());
        };
        let (name, version) = api_group(method);
        if api.allows("grpc", name, version) {
            Ok(())
        } else {
            Err(ApiError::api_not_allowed("gRPC", name, version).to_status())
        }
    }

    fn record<T>(&self, method: &str, start: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => 0,
            Err(s) => s.code() as i32,
        };
        self.rt.metrics.grpc_call(
            method,
            tandem_proxy::telemetry::grpc_status_name(code),
            start.elapsed(),
        );
        if self.rt.api_logging() {
            tracing::info!(method, code, "gRPC API called");
        }
    }

    /// A SERVER span for a building block's RPC (`None` for invocation,
    /// which has its own CLIENT span, for metadata, shutdown and long-lived
    /// streams, or when tracing is off); its context replaces the
    /// `traceparent` the handler reads (a publish puts it in the
    /// CloudEvent).
    fn open_span<Req>(
        &self,
        method: &'static str,
        req: &mut Request<Req>,
    ) -> Option<tandem_proxy::trace::Span> {
        use tandem_proxy::trace::{Context, Kind};
        const UNTRACED: &[&str] = &[
            "InvokeService",
            "GetMetadata",
            "SetMetadata",
            "Shutdown",
            "SubscribeTopicEventsAlpha1",
            "SubscribeActorEventsAlpha1",
            "EncryptAlpha1",
            "DecryptAlpha1",
            "SubscribeConfiguration",
            "SubscribeConfigurationAlpha1",
        ];
        let tracer = self.rt.tracer();
        if !tracer.is_on() || UNTRACED.contains(&method) {
            return None;
        }
        let parent = metadata_str(req, "traceparent")
            .as_deref()
            .and_then(Context::parse);
        let mut span = tracer.start(
            || format!("/dapr.proto.runtime.v1.Dapr/{method}"),
            Kind::Server,
            parent,
        );
        span.attribute("rpc.system", "grpc");
        span.attribute("rpc.service", "dapr.proto.runtime.v1.Dapr");
        span.attribute("rpc.method", method);
        if let Ok(v) = span.context.traceparent().parse() {
            req.metadata_mut().insert("traceparent", v);
        }
        Some(span)
    }

    /// Runs one RPC: authorize, handle, record, inside its span.
    async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        mut req: Request<Req>,
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ApiError>>,
    {
        let span = self.open_span(method, &mut req);
        self.call_in(method, req, span, handler).await
    }

    /// `call` with the span opened already (by a handler that reads the
    /// span's `traceparent` before it runs).
    async fn call_in<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Request<Req>,
        span: Option<tandem_proxy::trace::Span>,
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ApiError>>,
    {
        let result = self.run(method, req, handler).await;
        if let Some(mut span) = span {
            let code = result.as_ref().err().map_or(0, |s| s.code() as i32);
            span.attribute(
                "rpc.grpc.status_code",
                tandem_proxy::telemetry::grpc_status_name(code),
            );
            self.rt.tracer().end(span, code == 0);
        }
        result
    }

    async fn run<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Request<Req>,
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ApiError>>,
    {
        let start = Instant::now();
        let result = match self.authorize(&req).and_then(|()| self.api_allowed(method)) {
            Ok(()) => handler(req.into_inner())
                .await
                .map(Response::new)
                .map_err(|e| e.to_status()),
            Err(s) => Err(s),
        };
        self.record(method, start, &result);
        result
    }

    async fn bulk_publish(
        &self,
        method: &'static str,
        req: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        let rt = self.rt.clone();
        let mut req = req;
        let span = self.open_span(method, &mut req);
        let trace = (
            metadata_str(&req, "traceparent"),
            metadata_str(&req, "tracestate"),
        );
        self.call_in(method, req, span, |r| async move {
            let entries = r
                .entries
                .into_iter()
                .map(|e| pubsub::BulkEntry {
                    entry_id: e.entry_id,
                    data: e.event.into(),
                    content_type: e.content_type,
                    metadata: to_btree(e.metadata),
                })
                .collect();
            let failed = pubsub::bulk_publish(
                &rt,
                &r.pubsub_name,
                &r.topic,
                entries,
                to_btree(r.metadata),
                trace,
            )
            .await?;
            Ok(rt::BulkPublishResponse {
                failed_entries: failed
                    .into_iter()
                    .map(|(entry_id, error)| rt::BulkPublishResponseFailedEntry { entry_id, error })
                    .collect(),
            })
        })
        .await
    }

    async fn get_configuration_impl(
        &self,
        method: &'static str,
        req: Request<rt::GetConfigurationRequest>,
    ) -> Result<Response<rt::GetConfigurationResponse>, Status> {
        let rt = self.rt.clone();
        self.call(method, req, |r| async move {
            let items =
                crate::api::configuration::get(&rt, &r.store_name, &r.keys, &to_btree(r.metadata))
                    .await?;
            Ok(rt::GetConfigurationResponse {
                items: config_items(items),
            })
        })
        .await
    }

    /// The first message carries the subscription id; each change follows
    /// as one message. Dropping the stream (the caller went away) ends the
    /// subscription; unsubscribing ends the stream.
    async fn subscribe_configuration_impl(
        &self,
        method: &'static str,
        req: Request<rt::SubscribeConfigurationRequest>,
    ) -> Result<Response<GrpcStream<rt::SubscribeConfigurationResponse>>, Status> {
        let rt = self.rt.clone();
        self.call(method, req, |r| async move {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let sender = tx.clone();
            let deliver = Arc::new(
                move |id: &str, items: crate::components::configuration::Items| {
                    let _ = sender.send(Ok(rt::SubscribeConfigurationResponse {
                        id: id.to_string(),
                        items: config_items(items),
                    }));
                },
            );
            let id = crate::api::configuration::subscribe(
                &rt,
                &r.store_name,
                r.keys,
                to_btree(r.metadata),
                deliver,
            )
            .await?;
            let _ = tx.send(Ok(rt::SubscribeConfigurationResponse {
                id: id.clone(),
                items: Default::default(),
            }));
            drop(tx);
            let guard = ConfigSubscription {
                rt: rt.clone(),
                store: r.store_name,
                id,
            };
            let stream = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
                move |m: Result<rt::SubscribeConfigurationResponse, Status>| {
                    let _keep = &guard;
                    m
                },
            );
            Ok(Box::pin(stream) as GrpcStream<rt::SubscribeConfigurationResponse>)
        })
        .await
    }

    async fn unsubscribe_configuration_impl(
        &self,
        method: &'static str,
        req: Request<rt::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
        let rt = self.rt.clone();
        self.call(method, req, |r| async move {
            Ok(
                match crate::api::configuration::unsubscribe(&rt, &r.store_name, &r.id) {
                    Ok(()) => rt::UnsubscribeConfigurationResponse {
                        ok: true,
                        message: String::new(),
                    },
                    Err(e) => rt::UnsubscribeConfigurationResponse {
                        ok: false,
                        message: e.message,
                    },
                },
            )
        })
        .await
    }
}

/// The API group and version a gRPC method belongs to, as named in
/// Configuration `spec.api` rules (`state`/`v1`, `lock`/`v1alpha1`, …).
fn api_group(method: &str) -> (&'static str, &'static str) {
    let version = if method.ends_with("Alpha1") {
        "v1alpha1"
    } else if method.ends_with("Alpha2") {
        "v1alpha2"
    } else {
        "v1"
    };
    let name = if method.contains("Actor") {
        "actors"
    } else if method.contains("Job") {
        "jobs"
    } else if method.starts_with("Invoke") && method != "InvokeBinding" {
        "invoke"
    } else if method.contains("State") {
        "state"
    } else if method.contains("Publish") || method.contains("TopicEvents") {
        "publish"
    } else if method == "InvokeBinding" {
        "bindings"
    } else if method.contains("Secret") {
        "secrets"
    } else if method.contains("Configuration") {
        "configuration"
    } else if method.starts_with("TryLock") {
        "lock"
    } else if method.starts_with("Unlock") {
        "unlock"
    } else if method.ends_with("Metadata") {
        "metadata"
    } else if method == "Shutdown" {
        "shutdown"
    } else if method.starts_with("Converse") {
        "conversation"
    } else if method.starts_with("Encrypt") || method.starts_with("Decrypt") {
        "crypto"
    } else {
        "unknown"
    };
    (name, version)
}

fn concurrency_name(v: i32) -> &'static str {
    match common::state_options::StateConcurrency::try_from(v) {
        Ok(common::state_options::StateConcurrency::ConcurrencyFirstWrite) => "first-write",
        Ok(common::state_options::StateConcurrency::ConcurrencyLastWrite) => "last-write",
        _ => "",
    }
}

fn consistency_name(v: i32) -> &'static str {
    match common::state_options::StateConsistency::try_from(v) {
        Ok(common::state_options::StateConsistency::ConsistencyEventual) => "eventual",
        Ok(common::state_options::StateConsistency::ConsistencyStrong) => "strong",
        _ => "",
    }
}

/// A gRPC state item: its bytes are stored as they are.
pub(crate) fn save_item(i: common::StateItem) -> SaveItem {
    let options = i.options.unwrap_or_default();
    SaveItem {
        key: i.key,
        value: i.value.into(),
        etag: i.etag.map(|e| e.value),
        metadata: to_btree(i.metadata),
        concurrency: concurrency_name(options.concurrency).into(),
        consistency: consistency_name(options.consistency).into(),
    }
}

fn to_btree(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn config_items(
    items: crate::components::configuration::Items,
) -> std::collections::HashMap<String, common::ConfigurationItem> {
    items
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                common::ConfigurationItem {
                    value: i.value,
                    version: i.version,
                    metadata: i.metadata.into_iter().collect(),
                },
            )
        })
        .collect()
}

/// Ends a streamed configuration subscription when its stream is dropped.
struct ConfigSubscription {
    rt: Arc<Runtime>,
    store: String,
    id: String,
}

impl Drop for ConfigSubscription {
    fn drop(&mut self) {
        self.rt
            .drop_configuration_subscription(&self.store, &self.id);
    }
}

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn invoke_service(
        &self,
        req: Request<rt::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let rt = self.rt.clone();
        self.call("InvokeService", req, |r| async move {
            crate::api::invoke::invoke_grpc(&rt, r).await
        })
        .await
    }

    async fn get_state(
        &self,
        req: Request<rt::GetStateRequest>,
    ) -> Result<Response<rt::GetStateResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetState", req, |r| async move {
            let consistency = consistency_name(r.consistency);
            let value = state::get(
                &rt,
                &r.store_name,
                &r.key,
                consistency,
                to_btree(r.metadata),
            )
            .await?;
            // A missing key is OK with empty fields, not NOT_FOUND.
            Ok(
                value.map_or_else(rt::GetStateResponse::default, |v| rt::GetStateResponse {
                    data: v.data.to_vec(),
                    etag: v.etag,
                    metadata: v.metadata.into_iter().collect(),
                }),
            )
        })
        .await
    }

    async fn get_bulk_state(
        &self,
        req: Request<rt::GetBulkStateRequest>,
    ) -> Result<Response<rt::GetBulkStateResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetBulkState", req, |r| async move {
            let items = state::bulk_get(
                &rt,
                &r.store_name,
                r.keys,
                r.parallelism.max(0) as usize,
                to_btree(r.metadata),
            )
            .await?;
            Ok(rt::GetBulkStateResponse {
                items: items
                    .into_iter()
                    .map(|i| match i.result {
                        Ok(Some(v)) => rt::BulkStateItem {
                            key: i.key,
                            data: v.data.to_vec(),
                            etag: v.etag,
                            metadata: v.metadata.into_iter().collect(),
                            ..Default::default()
                        },
                        Ok(None) => rt::BulkStateItem {
                            key: i.key,
                            ..Default::default()
                        },
                        Err(error) => rt::BulkStateItem {
                            key: i.key,
                            error,
                            ..Default::default()
                        },
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn save_state(&self, req: Request<rt::SaveStateRequest>) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("SaveState", req, |r| async move {
            state::save(
                &rt,
                &r.store_name,
                r.states.into_iter().map(save_item).collect(),
            )
            .await
        })
        .await
    }

    async fn query_state_alpha1(
        &self,
        req: Request<rt::QueryStateRequest>,
    ) -> Result<Response<rt::QueryStateResponse>, Status> {
        let rt = self.rt.clone();
        self.call("QueryStateAlpha1", req, |r| async move {
            let result = state::query(&rt, &r.store_name, r.query.as_bytes()).await?;
            Ok(rt::QueryStateResponse {
                results: result
                    .items
                    .into_iter()
                    .map(|i| rt::QueryStateItem {
                        key: i.key,
                        data: i.data.to_vec(),
                        etag: i.etag,
                        error: String::new(),
                    })
                    .collect(),
                token: result.token.unwrap_or_default(),
                metadata: Default::default(),
            })
        })
        .await
    }

    async fn delete_state(
        &self,
        req: Request<rt::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("DeleteState", req, |r| async move {
            let options = r.options.unwrap_or_default();
            let item = SaveItem {
                key: r.key,
                etag: r.etag.map(|e| e.value),
                metadata: to_btree(r.metadata),
                concurrency: concurrency_name(options.concurrency).into(),
                consistency: consistency_name(options.consistency).into(),
                value: Default::default(),
            };
            state::delete(&rt, &r.store_name, vec![item]).await
        })
        .await
    }

    async fn delete_bulk_state(
        &self,
        req: Request<rt::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("DeleteBulkState", req, |r| async move {
            state::delete(
                &rt,
                &r.store_name,
                r.states.into_iter().map(save_item).collect(),
            )
            .await
        })
        .await
    }

    async fn execute_state_transaction(
        &self,
        req: Request<rt::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("ExecuteStateTransaction", req, |r| async move {
            let ops = r
                .operations
                .into_iter()
                .map(|op| TxItem {
                    operation: op.operation_type,
                    item: save_item(op.request.unwrap_or_default()),
                })
                .collect();
            state::transaction(&rt, &r.store_name, ops, to_btree(r.metadata)).await
        })
        .await
    }

    async fn publish_event(
        &self,
        req: Request<rt::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        let mut req = req;
        let span = self.open_span("PublishEvent", &mut req);
        let traceparent = metadata_str(&req, "traceparent");
        let tracestate = metadata_str(&req, "tracestate");
        self.call_in("PublishEvent", req, span, |r| async move {
            let metadata = to_btree(r.metadata);
            pubsub::publish(
                &rt,
                pubsub::Publish {
                    pubsub: r.pubsub_name,
                    topic: r.topic,
                    data: r.data.into(),
                    content_type: r.data_content_type,
                    metadata,
                    traceparent,
                    tracestate,
                },
            )
            .await
        })
        .await
    }

    async fn bulk_publish_event_alpha1(
        &self,
        req: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        self.bulk_publish("BulkPublishEventAlpha1", req).await
    }

    async fn bulk_publish_event(
        &self,
        req: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        self.bulk_publish("BulkPublishEvent", req).await
    }

    type SubscribeActorEventsAlpha1Stream = GrpcStream<rt::SubscribeActorEventsResponseAlpha1>;

    async fn subscribe_actor_events_alpha1(
        &self,
        req: Request<Streaming<rt::SubscribeActorEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeActorEventsAlpha1Stream>, Status> {
        let rt = self.rt.clone();
        self.call("SubscribeActorEventsAlpha1", req, |inbound| async move {
            let stream = crate::actors::stream::subscribe(rt, inbound).await?;
            Ok(Box::pin(stream) as Self::SubscribeActorEventsAlpha1Stream)
        })
        .await
    }

    type SubscribeTopicEventsAlpha1Stream = GrpcStream<rt::SubscribeTopicEventsResponseAlpha1>;

    async fn subscribe_topic_events_alpha1(
        &self,
        req: Request<Streaming<rt::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        let rt = self.rt.clone();
        self.call("SubscribeTopicEventsAlpha1", req, |inbound| async move {
            let stream = crate::api::streaming::subscribe(rt, inbound).await?;
            Ok(Box::pin(stream) as Self::SubscribeTopicEventsAlpha1Stream)
        })
        .await
    }

    async fn invoke_binding(
        &self,
        req: Request<rt::InvokeBindingRequest>,
    ) -> Result<Response<rt::InvokeBindingResponse>, Status> {
        let rt = self.rt.clone();
        let mut req = req;
        let span = self.open_span("InvokeBinding", &mut req);
        let traceparent = metadata_str(&req, "traceparent");
        self.call_in("InvokeBinding", req, span, |r| async move {
            let out = crate::api::bindings::invoke(
                &rt,
                &r.name,
                crate::components::bindings::OutputRequest {
                    operation: r.operation,
                    data: r.data.into(),
                    metadata: to_btree(r.metadata),
                },
                traceparent.as_deref(),
            )
            .await?;
            Ok(rt::InvokeBindingResponse {
                data: out.data.map(|d| d.to_vec()).unwrap_or_default(),
                metadata: out.metadata.into_iter().collect(),
            })
        })
        .await
    }

    async fn get_secret(
        &self,
        req: Request<rt::GetSecretRequest>,
    ) -> Result<Response<rt::GetSecretResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetSecret", req, |r| async move {
            let secret = secrets::get(&rt, &r.store_name, &r.key, &to_btree(r.metadata)).await?;
            Ok(rt::GetSecretResponse {
                data: secret.unwrap_or_default().into_iter().collect(),
            })
        })
        .await
    }

    async fn get_bulk_secret(
        &self,
        req: Request<rt::GetBulkSecretRequest>,
    ) -> Result<Response<rt::GetBulkSecretResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetBulkSecret", req, |r| async move {
            let all = secrets::bulk(&rt, &r.store_name, &to_btree(r.metadata)).await?;
            Ok(rt::GetBulkSecretResponse {
                data: all
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            rt::SecretResponse {
                                secrets: v.into_iter().collect(),
                            },
                        )
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_configuration_alpha1(
        &self,
        req: Request<rt::GetConfigurationRequest>,
    ) -> Result<Response<rt::GetConfigurationResponse>, Status> {
        self.get_configuration_impl("GetConfigurationAlpha1", req)
            .await
    }

    async fn get_configuration(
        &self,
        req: Request<rt::GetConfigurationRequest>,
    ) -> Result<Response<rt::GetConfigurationResponse>, Status> {
        self.get_configuration_impl("GetConfiguration", req).await
    }

    type SubscribeConfigurationAlpha1Stream = GrpcStream<rt::SubscribeConfigurationResponse>;

    async fn subscribe_configuration_alpha1(
        &self,
        req: Request<rt::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationAlpha1Stream>, Status> {
        self.subscribe_configuration_impl("SubscribeConfigurationAlpha1", req)
            .await
    }

    type SubscribeConfigurationStream = GrpcStream<rt::SubscribeConfigurationResponse>;

    async fn subscribe_configuration(
        &self,
        req: Request<rt::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        self.subscribe_configuration_impl("SubscribeConfiguration", req)
            .await
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        req: Request<rt::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
        self.unsubscribe_configuration_impl("UnsubscribeConfigurationAlpha1", req)
            .await
    }

    async fn unsubscribe_configuration(
        &self,
        req: Request<rt::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
        self.unsubscribe_configuration_impl("UnsubscribeConfiguration", req)
            .await
    }

    async fn try_lock_alpha1(
        &self,
        req: Request<rt::TryLockRequest>,
    ) -> Result<Response<rt::TryLockResponse>, Status> {
        let rt = self.rt.clone();
        self.call("TryLockAlpha1", req, |r| async move {
            let success = crate::api::lock::try_lock(
                &rt,
                &r.store_name,
                &r.resource_id,
                &r.lock_owner,
                i64::from(r.expiry_in_seconds),
            )
            .await?;
            Ok(rt::TryLockResponse { success })
        })
        .await
    }

    async fn unlock_alpha1(
        &self,
        req: Request<rt::UnlockRequest>,
    ) -> Result<Response<rt::UnlockResponse>, Status> {
        let rt = self.rt.clone();
        self.call("UnlockAlpha1", req, |r| async move {
            let status =
                crate::api::lock::unlock(&rt, &r.store_name, &r.resource_id, &r.lock_owner).await?;
            Ok(rt::UnlockResponse {
                status: status as i32,
            })
        })
        .await
    }

    async fn get_metadata(
        &self,
        req: Request<rt::GetMetadataRequest>,
    ) -> Result<Response<rt::GetMetadataResponse>, Status> {
        let rt = self.rt.clone();
        self.call(
            "GetMetadata",
            req,
            |_| async move { Ok(metadata::build(&rt)) },
        )
        .await
    }

    async fn set_metadata(
        &self,
        req: Request<rt::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("SetMetadata", req, |r| async move {
            rt.set_extended(r.key, r.value);
            Ok(())
        })
        .await
    }

    async fn converse_alpha1(
        &self,
        req: Request<rt::ConversationRequest>,
    ) -> Result<Response<rt::ConversationResponse>, Status> {
        let rt = self.rt.clone();
        self.call("ConverseAlpha1", req, |r| async move {
            conversation::alpha1(&rt, r).await
        })
        .await
    }

    async fn converse_alpha2(
        &self,
        req: Request<rt::ConversationRequestAlpha2>,
    ) -> Result<Response<rt::ConversationResponseAlpha2>, Status> {
        let rt = self.rt.clone();
        self.call("ConverseAlpha2", req, |r| async move {
            conversation::alpha2(&rt, r).await
        })
        .await
    }

    type EncryptAlpha1Stream = GrpcStream<rt::EncryptResponse>;

    async fn encrypt_alpha1(
        &self,
        req: Request<Streaming<rt::EncryptRequest>>,
    ) -> Result<Response<Self::EncryptAlpha1Stream>, Status> {
        let rt = self.rt.clone();
        self.call("EncryptAlpha1", req, |inbound| async move {
            let out = crypto::encrypt(&rt, inbound).await?;
            Ok(Box::pin(tokio_stream::StreamExt::map(out, |p| {
                p.map(|payload| rt::EncryptResponse {
                    payload: Some(payload),
                })
            })) as Self::EncryptAlpha1Stream)
        })
        .await
    }

    type DecryptAlpha1Stream = GrpcStream<rt::DecryptResponse>;

    async fn decrypt_alpha1(
        &self,
        req: Request<Streaming<rt::DecryptRequest>>,
    ) -> Result<Response<Self::DecryptAlpha1Stream>, Status> {
        let rt = self.rt.clone();
        self.call("DecryptAlpha1", req, |inbound| async move {
            let out = crypto::decrypt(&rt, inbound).await?;
            Ok(Box::pin(tokio_stream::StreamExt::map(out, |p| {
                p.map(|payload| rt::DecryptResponse {
                    payload: Some(payload),
                })
            })) as Self::DecryptAlpha1Stream)
        })
        .await
    }

    async fn subtle_get_key_alpha1(
        &self,
        req: Request<rt::SubtleGetKeyRequest>,
    ) -> Result<Response<rt::SubtleGetKeyResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleGetKeyAlpha1", req, |r| async move {
            crate::api::crypto::subtle::get_key(&rt, r).await
        })
        .await
    }

    async fn subtle_encrypt_alpha1(
        &self,
        req: Request<rt::SubtleEncryptRequest>,
    ) -> Result<Response<rt::SubtleEncryptResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleEncryptAlpha1", req, |r| async move {
            crate::api::crypto::subtle::encrypt(&rt, r).await
        })
        .await
    }

    async fn subtle_decrypt_alpha1(
        &self,
        req: Request<rt::SubtleDecryptRequest>,
    ) -> Result<Response<rt::SubtleDecryptResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleDecryptAlpha1", req, |r| async move {
            crate::api::crypto::subtle::decrypt(&rt, r).await
        })
        .await
    }

    async fn subtle_wrap_key_alpha1(
        &self,
        req: Request<rt::SubtleWrapKeyRequest>,
    ) -> Result<Response<rt::SubtleWrapKeyResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleWrapKeyAlpha1", req, |r| async move {
            crate::api::crypto::subtle::wrap_key(&rt, r).await
        })
        .await
    }

    async fn subtle_unwrap_key_alpha1(
        &self,
        req: Request<rt::SubtleUnwrapKeyRequest>,
    ) -> Result<Response<rt::SubtleUnwrapKeyResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleUnwrapKeyAlpha1", req, |r| async move {
            crate::api::crypto::subtle::unwrap_key(&rt, r).await
        })
        .await
    }

    async fn subtle_sign_alpha1(
        &self,
        req: Request<rt::SubtleSignRequest>,
    ) -> Result<Response<rt::SubtleSignResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleSignAlpha1", req, |r| async move {
            crate::api::crypto::subtle::sign(&rt, r).await
        })
        .await
    }

    async fn subtle_verify_alpha1(
        &self,
        req: Request<rt::SubtleVerifyRequest>,
    ) -> Result<Response<rt::SubtleVerifyResponse>, Status> {
        let rt = self.rt.clone();
        self.call("SubtleVerifyAlpha1", req, |r| async move {
            crate::api::crypto::subtle::verify(&rt, r).await
        })
        .await
    }

    async fn schedule_job_alpha1(
        &self,
        req: Request<rt::ScheduleJobRequest>,
    ) -> Result<Response<rt::ScheduleJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call("ScheduleJobAlpha1", req, |r| async move {
            jobs::schedule(&rt, r).await
        })
        .await
    }

    async fn start_workflow_alpha1(
        &self,
        req: Request<rt::StartWorkflowRequest>,
    ) -> Result<Response<rt::StartWorkflowResponse>, Status> {
        let rt = self.rt.clone();
        self.call("StartWorkflowAlpha1", req, |r| async move {
            workflows::start(&rt, r).await
        })
        .await
    }

    async fn get_workflow_alpha1(
        &self,
        req: Request<rt::GetWorkflowRequest>,
    ) -> Result<Response<rt::GetWorkflowResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetWorkflowAlpha1", req, |r| async move {
            workflows::get(&rt, r).await
        })
        .await
    }

    async fn raise_event_workflow_alpha1(
        &self,
        req: Request<rt::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("RaiseEventWorkflowAlpha1", req, |r| async move {
            workflows::raise(&rt, r).await
        })
        .await
    }

    async fn purge_workflow_alpha1(
        &self,
        req: Request<rt::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("PurgeWorkflowAlpha1", req, |r| async move {
            crate::api::workflows::purge(&rt, &r.instance_id).await
        })
        .await
    }

    async fn terminate_workflow_alpha1(
        &self,
        req: Request<rt::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("TerminateWorkflowAlpha1", req, |r| async move {
            crate::api::workflows::terminate(&rt, &r.instance_id).await
        })
        .await
    }

    async fn pause_workflow_alpha1(
        &self,
        req: Request<rt::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("PauseWorkflowAlpha1", req, |r| async move {
            crate::api::workflows::pause(&rt, &r.instance_id).await
        })
        .await
    }

    async fn resume_workflow_alpha1(
        &self,
        req: Request<rt::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("ResumeWorkflowAlpha1", req, |r| async move {
            crate::api::workflows::resume(&rt, &r.instance_id).await
        })
        .await
    }

    async fn start_workflow_beta1(
        &self,
        req: Request<rt::StartWorkflowRequest>,
    ) -> Result<Response<rt::StartWorkflowResponse>, Status> {
        let rt = self.rt.clone();
        self.call("StartWorkflowBeta1", req, |r| async move {
            workflows::start(&rt, r).await
        })
        .await
    }

    async fn get_workflow_beta1(
        &self,
        req: Request<rt::GetWorkflowRequest>,
    ) -> Result<Response<rt::GetWorkflowResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetWorkflowBeta1", req, |r| async move {
            workflows::get(&rt, r).await
        })
        .await
    }

    async fn raise_event_workflow_beta1(
        &self,
        req: Request<rt::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("RaiseEventWorkflowBeta1", req, |r| async move {
            workflows::raise(&rt, r).await
        })
        .await
    }

    async fn purge_workflow_beta1(
        &self,
        req: Request<rt::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("PurgeWorkflowBeta1", req, |r| async move {
            crate::api::workflows::purge(&rt, &r.instance_id).await
        })
        .await
    }

    async fn terminate_workflow_beta1(
        &self,
        req: Request<rt::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("TerminateWorkflowBeta1", req, |r| async move {
            crate::api::workflows::terminate(&rt, &r.instance_id).await
        })
        .await
    }

    async fn pause_workflow_beta1(
        &self,
        req: Request<rt::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("PauseWorkflowBeta1", req, |r| async move {
            crate::api::workflows::pause(&rt, &r.instance_id).await
        })
        .await
    }

    async fn resume_workflow_beta1(
        &self,
        req: Request<rt::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("ResumeWorkflowBeta1", req, |r| async move {
            crate::api::workflows::resume(&rt, &r.instance_id).await
        })
        .await
    }

    async fn invoke_actor(
        &self,
        req: Request<rt::InvokeActorRequest>,
    ) -> Result<Response<rt::InvokeActorResponse>, Status> {
        let rt = self.rt.clone();
        self.call("InvokeActor", req, |r| async move {
            actors::invoke(&rt, r).await
        })
        .await
    }

    async fn get_actor_state(
        &self,
        req: Request<rt::GetActorStateRequest>,
    ) -> Result<Response<rt::GetActorStateResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetActorState", req, |r| async move {
            actors::get_state(&rt, r).await
        })
        .await
    }

    async fn execute_actor_state_transaction(
        &self,
        req: Request<rt::ExecuteActorStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("ExecuteActorStateTransaction", req, |r| async move {
            actors::transact(&rt, r).await
        })
        .await
    }

    async fn register_actor_timer(
        &self,
        req: Request<rt::RegisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("RegisterActorTimer", req, |r| async move {
            actors::register_timer(&rt, r).await
        })
        .await
    }

    async fn unregister_actor_timer(
        &self,
        req: Request<rt::UnregisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("UnregisterActorTimer", req, |r| async move {
            actors::unregister_timer(&rt, r).await
        })
        .await
    }

    async fn register_actor_reminder(
        &self,
        req: Request<rt::RegisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("RegisterActorReminder", req, |r| async move {
            actors::register_reminder(&rt, r).await
        })
        .await
    }

    async fn unregister_actor_reminder(
        &self,
        req: Request<rt::UnregisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        let rt = self.rt.clone();
        self.call("UnregisterActorReminder", req, |r| async move {
            actors::unregister_reminder(&rt, r).await
        })
        .await
    }

    async fn get_actor_reminder(
        &self,
        req: Request<rt::GetActorReminderRequest>,
    ) -> Result<Response<rt::GetActorReminderResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetActorReminder", req, |r| async move {
            actors::get_reminder(&rt, r).await
        })
        .await
    }

    async fn list_actor_reminders(
        &self,
        req: Request<rt::ListActorRemindersRequest>,
    ) -> Result<Response<rt::ListActorRemindersResponse>, Status> {
        let rt = self.rt.clone();
        self.call("ListActorReminders", req, |r| async move {
            actors::list_reminders(&rt, r).await
        })
        .await
    }

    async fn unregister_actor_reminders_by_type(
        &self,
        req: Request<rt::UnregisterActorRemindersByTypeRequest>,
    ) -> Result<Response<rt::UnregisterActorRemindersByTypeResponse>, Status> {
        let rt = self.rt.clone();
        self.call("UnregisterActorRemindersByType", req, |r| async move {
            actors::unregister_by_type(&rt, r).await
        })
        .await
    }

    async fn schedule_job(
        &self,
        req: Request<rt::ScheduleJobRequest>,
    ) -> Result<Response<rt::ScheduleJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call("ScheduleJob", req, |r| async move {
            jobs::schedule(&rt, r).await
        })
        .await
    }

    async fn get_job_alpha1(
        &self,
        req: Request<rt::GetJobRequest>,
    ) -> Result<Response<rt::GetJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call(
            "GetJobAlpha1",
            req,
            |r| async move { jobs::get(&rt, r).await },
        )
        .await
    }

    async fn get_job(
        &self,
        req: Request<rt::GetJobRequest>,
    ) -> Result<Response<rt::GetJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call("GetJob", req, |r| async move { jobs::get(&rt, r).await })
            .await
    }

    async fn delete_job_alpha1(
        &self,
        req: Request<rt::DeleteJobRequest>,
    ) -> Result<Response<rt::DeleteJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call("DeleteJobAlpha1", req, |r| async move {
            jobs::delete(&rt, r).await
        })
        .await
    }

    async fn delete_job(
        &self,
        req: Request<rt::DeleteJobRequest>,
    ) -> Result<Response<rt::DeleteJobResponse>, Status> {
        let rt = self.rt.clone();
        self.call(
            "DeleteJob",
            req,
            |r| async move { jobs::delete(&rt, r).await },
        )
        .await
    }

    async fn delete_jobs_by_prefix_alpha1(
        &self,
        req: Request<rt::DeleteJobsByPrefixRequestAlpha1>,
    ) -> Result<Response<rt::DeleteJobsByPrefixResponseAlpha1>, Status> {
        let rt = self.rt.clone();
        self.call("DeleteJobsByPrefixAlpha1", req, |r| async move {
            jobs::delete_prefix(&rt, r.name_prefix)
                .await
                .map(|()| rt::DeleteJobsByPrefixResponseAlpha1 {})
        })
        .await
    }

    async fn delete_jobs_by_prefix(
        &self,
        req: Request<rt::DeleteJobsByPrefixRequest>,
    ) -> Result<Response<rt::DeleteJobsByPrefixResponse>, Status> {
        let rt = self.rt.clone();
        self.call("DeleteJobsByPrefix", req, |r| async move {
            jobs::delete_prefix(&rt, r.name_prefix)
                .await
                .map(|()| rt::DeleteJobsByPrefixResponse {})
        })
        .await
    }

    async fn list_jobs_alpha1(
        &self,
        req: Request<rt::ListJobsRequestAlpha1>,
    ) -> Result<Response<rt::ListJobsResponseAlpha1>, Status> {
        let rt = self.rt.clone();
        self.call("ListJobsAlpha1", req, |_r| async move {
            jobs::list(&rt)
                .await
                .map(|jobs| rt::ListJobsResponseAlpha1 { jobs })
        })
        .await
    }

    async fn list_jobs(
        &self,
        req: Request<rt::ListJobsRequest>,
    ) -> Result<Response<rt::ListJobsResponse>, Status> {
        let rt = self.rt.clone();
        self.call("ListJobs", req, |_r| async move {
            jobs::list(&rt)
                .await
                .map(|jobs| rt::ListJobsResponse { jobs })
        })
        .await
    }

    async fn shutdown(&self, req: Request<rt::ShutdownRequest>) -> Result<Response<()>, Status> {
        let force = req
            .metadata()
            .get("dapr-force-shutdown")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let rt = self.rt.clone();
        self.call("Shutdown", req, |_| async move {
            if force {
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    std::process::exit(1);
                });
            } else {
                tracing::info!("shutdown requested through the gRPC API");
                rt.request_shutdown();
            }
            Ok(())
        })
        .await
    }
}

/// Serves the Dapr gRPC API until shutdown is signalled.
pub async fn serve(listener: TcpListener, rt: Arc<Runtime>) -> Result<(), tonic::transport::Error> {
    let max = usize::try_from(rt.options.max_body_size).unwrap_or(usize::MAX);
    let service = DaprServer::new(DaprApi::new(rt.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut shutdown = rt.shutdown_signal();
    // Our own listener (bound early so a port clash fails fast): the
    // builder's `tcp_nodelay` applies only to listeners it binds, so the
    // incoming stream sets it on every accepted socket.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .layer(proxy::Layer(rt.clone()))
        .add_service(service)
        .add_service(
            tandem_proto::durabletask::task_hub_sidecar_service_server::TaskHubSidecarServiceServer::new(
                crate::workflow::service::TaskHub::new(rt.clone()),
            )
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await
}
