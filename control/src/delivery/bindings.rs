//! Input bindings to the app (dapr-wire.md §3): a binding whose
//! `direction` names `input` is read at once; one without a `direction` is
//! read only if the app says it takes its events — an HTTP app by answering
//! `OPTIONS /<route>` with 2xx or 405 (within
//! `--app-binding-options-timeout`), a gRPC app by listing it in
//! `ListInputBindings`. Each event is POSTed to `/<route>` (metadata as
//! headers, data as the body, `Content-Type: application/json`; the app
//! must answer 200) or given to `OnBindingEvent`, whose answer may save
//! state and send its data on to output bindings. Failures are retried
//! under the component's inbound policy, then reported to the binding,
//! which redelivers if it can (a broker) or drops (a schedule).

use crate::components::BindingComponent;
use crate::components::bindings::{InputEvent, InputHandler, OutputRequest};
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tandem_proto::runtime::v1 as rtpb;

/// Starts reading every input binding the app takes; returns how many
/// were considered (each decides, and reads, on a task of its own, kept
/// with the subscriptions so that it stops with them).
pub fn start(rt: &Arc<Runtime>) -> usize {
    let snap = rt.snapshot();
    let mut started = 0;
    for (name, comp) in &snap.bindings {
        if !comp.binding.is_input() || !comp.direction.input {
            continue;
        }
        if rt.app.is_none() {
            tracing::warn!(binding = %name, "input binding not read: there is no app channel (no --app-port)");
            continue;
        }
        let (rt2, name, comp) = (rt.clone(), name.clone(), comp.clone());
        let task = tokio::spawn(async move {
            if !comp.direction.declared && !app_takes(&rt2, &name, &comp).await {
                tracing::info!(binding = %name, "the app does not take this binding's events; not read (set metadata direction: input to read it anyway)");
                return;
            }
            let handler = handler(rt2.clone(), name.clone(), comp.clone());
            match comp.binding.read(handler) {
                Ok(handle) => {
                    tracing::info!(binding = %name, route = %comp.route, "input binding read");
                    // Held until this task is stopped with the subscriptions.
                    let _handle = handle;
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    tracing::warn!(binding = %name, error = %e, "input binding could not start")
                }
            }
        });
        rt.keep_subscription(crate::components::pubsub::SubscriptionHandle::new(task));
        started += 1;
    }
    started
}

/// Whether the app asks for `name`'s events.
async fn app_takes(rt: &Runtime, name: &str, comp: &BindingComponent) -> bool {
    let Some(app) = rt.app.as_ref() else {
        return false;
    };
    let timeout = rt.options.app_binding_options_timeout;
    if let Some(channel) = app.grpc_channel() {
        let mut client = rtpb::app_callback_client::AppCallbackClient::new(channel);
        let mut req = tonic::Request::new(());
        app.add_grpc_token(&mut req);
        return match tokio::time::timeout(timeout, client.list_input_bindings(req)).await {
            Ok(Ok(resp)) => resp.into_inner().bindings.iter().any(|b| b == name),
            Ok(Err(status)) => {
                if status.code() != tonic::Code::Unimplemented {
                    tracing::warn!(binding = %name, error = %status.message(), "ListInputBindings failed");
                }
                false
            }
            Err(_) => false,
        };
    }
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri(comp.route.as_str())
        .body(tandem_proxy::invoke::full(Bytes::new()))
        .expect("valid request parts");
    match tokio::time::timeout(timeout, app.send_http(req)).await {
        Ok(Ok(resp)) => {
            resp.status().is_success() || resp.status() == StatusCode::METHOD_NOT_ALLOWED
        }
        _ => false,
    }
}

fn handler(rt: Arc<Runtime>, name: String, comp: BindingComponent) -> InputHandler {
    Arc::new(move |event: InputEvent| {
        let (rt, name, comp) = (rt.clone(), name.clone(), comp.clone());
        Box::pin(async move {
            let attempt = || deliver(&rt, &name, &comp, event.clone());
            comp.inbound.run_transient(attempt).await.map_err(|e| {
                tracing::warn!(binding = %name, error = %e, "input binding event not taken by the app");
                e
            })
        })
    })
}

async fn deliver(
    rt: &Runtime,
    name: &str,
    comp: &BindingComponent,
    event: InputEvent,
) -> Result<Bytes, String> {
    let Some(app) = rt.app.as_ref() else {
        return Err("there is no app channel".into());
    };
    if let Some(channel) = app.grpc_channel() {
        return deliver_grpc(rt, app, channel, name, event).await;
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(comp.route.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in &event.metadata {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            req = req.header(n, v);
        }
    }
    let req = req
        .body(tandem_proxy::invoke::full(event.data))
        .map_err(|e| e.to_string())?;
    let resp = app.send_http(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the app's answer: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("the app answered {status} to POST {}", comp.route));
    }
    Ok(body)
}

async fn deliver_grpc(
    rt: &Runtime,
    app: &tandem_proxy::AppChannel,
    channel: tonic::transport::Channel,
    name: &str,
    event: InputEvent,
) -> Result<Bytes, String> {
    let mut req = tonic::Request::new(rtpb::BindingEventRequest {
        name: name.to_string(),
        data: event.data.to_vec(),
        metadata: event.metadata.into_iter().collect(),
    });
    app.add_grpc_token(&mut req);
    let _permit = app.permit().await;
    let mut client = rtpb::app_callback_client::AppCallbackClient::new(channel);
    let resp = client
        .on_binding_event(req)
        .await
        .map_err(|s| format!("OnBindingEvent failed: {}", s.message()))?
        .into_inner();
    if !resp.store_name.is_empty() && !resp.states.is_empty() {
        let items = resp
            .states
            .iter()
            .cloned()
            .map(crate::api::grpc::save_item)
            .collect();
        crate::api::state::save(rt, &resp.store_name, items)
            .await
            .map_err(|e| {
                format!(
                    "saving the app's states to `{}`: {}",
                    resp.store_name, e.message
                )
            })?;
    }
    let data = Bytes::from(resp.data);
    if !resp.to.is_empty() {
        let send = |to: String| {
            let data = data.clone();
            async move {
                let out = OutputRequest {
                    operation: "create".into(),
                    data,
                    metadata: Default::default(),
                };
                crate::api::bindings::invoke(rt, &to, out, None)
                    .await
                    .map_err(|e| format!("sending to binding `{to}`: {}", e.message))
            }
        };
        let parallel = resp.concurrency
            == rtpb::binding_event_response::BindingEventConcurrency::Parallel as i32;
        if parallel {
            for r in futures_util::future::join_all(resp.to.into_iter().map(send)).await {
                r?;
            }
        } else {
            for to in resp.to {
                send(to).await?;
            }
        }
    }
    Ok(data)
}
