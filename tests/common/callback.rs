//! A gRPC app (`AppCallback`) for tests: each method answers through the
//! closure the test gives it; a method without one answers UNIMPLEMENTED
//! (the list methods: an empty list).

use futures_util::future::BoxFuture;
use std::sync::Arc;
use tandem_proto::common::v1 as cv1;
use tandem_proto::runtime::v1 as rt;
use tonic::{Request, Response, Status};

pub type Handler<Req, Resp> =
    Arc<dyn Fn(Req) -> BoxFuture<'static, Result<Resp, Status>> + Send + Sync>;

/// Wraps an async closure as a `Handler`.
pub fn handler<Req, Resp, F, Fut>(f: F) -> Handler<Req, Resp>
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Arc::new(move |r| Box::pin(f(r)))
}

#[derive(Default, Clone)]
pub struct Callbacks {
    pub on_invoke: Option<Handler<cv1::InvokeRequest, cv1::InvokeResponse>>,
    pub list_topic_subscriptions: Option<Handler<(), rt::ListTopicSubscriptionsResponse>>,
    pub on_topic_event: Option<Handler<rt::TopicEventRequest, rt::TopicEventResponse>>,
    pub on_bulk_topic_event: Option<Handler<rt::TopicEventBulkRequest, rt::TopicEventBulkResponse>>,
    pub list_input_bindings: Option<Handler<(), rt::ListInputBindingsResponse>>,
    pub on_binding_event: Option<Handler<rt::BindingEventRequest, rt::BindingEventResponse>>,
    pub on_job_event: Option<Handler<rt::JobEventRequest, rt::JobEventResponse>>,
}

async fn call<Req, Resp>(
    h: &Option<Handler<Req, Resp>>,
    req: Request<Req>,
    missing: impl FnOnce() -> Result<Resp, Status>,
) -> Result<Response<Resp>, Status> {
    match h {
        Some(h) => h(req.into_inner()).await.map(Response::new),
        None => missing().map(Response::new),
    }
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not served by this test app"))
}

#[tonic::async_trait]
impl rt::app_callback_server::AppCallback for Callbacks {
    async fn on_invoke(
        &self,
        req: Request<cv1::InvokeRequest>,
    ) -> Result<Response<cv1::InvokeResponse>, Status> {
        call(&self.on_invoke, req, unimplemented).await
    }
    async fn list_topic_subscriptions(
        &self,
        req: Request<()>,
    ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
        call(&self.list_topic_subscriptions, req, || {
            Ok(Default::default())
        })
        .await
    }
    async fn on_topic_event(
        &self,
        req: Request<rt::TopicEventRequest>,
    ) -> Result<Response<rt::TopicEventResponse>, Status> {
        call(&self.on_topic_event, req, unimplemented).await
    }
    async fn list_input_bindings(
        &self,
        req: Request<()>,
    ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
        call(&self.list_input_bindings, req, || Ok(Default::default())).await
    }
    async fn on_binding_event(
        &self,
        req: Request<rt::BindingEventRequest>,
    ) -> Result<Response<rt::BindingEventResponse>, Status> {
        call(&self.on_binding_event, req, unimplemented).await
    }
    async fn on_bulk_topic_event(
        &self,
        req: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        call(&self.on_bulk_topic_event, req, unimplemented).await
    }

    async fn on_job_event(
        &self,
        req: Request<rt::JobEventRequest>,
    ) -> Result<Response<rt::JobEventResponse>, Status> {
        call(&self.on_job_event, req, unimplemented).await
    }
}

/// Serves `callbacks` on a port of its own (bound first, so nothing else
/// can take it); returns the port.
pub async fn serve(callbacks: Callbacks) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rt::app_callback_server::AppCallbackServer::new(callbacks))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}
