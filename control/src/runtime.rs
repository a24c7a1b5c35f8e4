//! The state of one running sidecar that outlives any snapshot: options,
//! readiness, extended metadata, the app channel and its health, metrics,
//! and the shutdown signal.

use crate::snapshot::{Snapshot, SubscriptionKind};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tandem_config::{SidecarOptions, SubscriptionSpec};
use tandem_proxy::{AppChannel, AppHealth, Metrics};
use tokio::sync::watch;

pub struct Runtime {
    /// Options with every port resolved.
    pub options: SidecarOptions,
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub app: Option<Arc<AppChannel>>,
    pub app_health: AppHealth,
    /// When this sidecar started (the dashboard's uptime).
    pub started: std::time::SystemTime,
    /// Service invocation to other apps; set once the internal port is up.
    invoker: std::sync::OnceLock<Arc<tandem_proxy::Invoker>>,
    /// Spans and trace context; a reload swaps it.
    tracer: Arc<ArcSwap<tandem_proxy::trace::Tracer>>,
    /// Access control of calls from peers; a reload swaps it.
    access: Arc<arc_swap::ArcSwapOption<tandem_proxy::access::AccessPolicy>>,
    /// Applies resource changes (hot reload); set at start.
    reloader: std::sync::OnceLock<Arc<crate::reload::Reloader>>,
    /// `healthz/outbound`: APIs up and components loaded.
    outbound_ready: AtomicBool,
    /// `healthz`: the app is reachable and init endpoints were called.
    ready: watch::Sender<bool>,
    extended: RwLock<BTreeMap<String, String>>,
    app_subscriptions: RwLock<Vec<(SubscriptionSpec, SubscriptionKind)>>,
    shutdown: watch::Sender<bool>,
    /// Open streaming subscriptions, by registration number.
    streaming: std::sync::Mutex<(u64, Vec<(u64, SubscriptionSpec)>)>,
    /// Live broker subscriptions; dropping one stops its delivery.
    subscriptions: std::sync::Mutex<Vec<crate::components::pubsub::SubscriptionHandle>>,
    /// Outbox relays: they do not involve the app, so they run while it is
    /// unhealthy and stop only at shutdown.
    relays: std::sync::Mutex<Vec<crate::components::pubsub::SubscriptionHandle>>,
    /// Configuration subscriptions by id: (store, what stops it on drop).
    configuration: std::sync::Mutex<
        std::collections::HashMap<String, (String, crate::components::pubsub::SubscriptionHandle)>,
    >,
    /// The Jobs API's engine and scheduler, opened on first use.
    pub jobs: std::sync::OnceLock<crate::api::jobs::Jobs>,
    /// Actor reminders: jobs of their own owner, fired at actors.
    pub reminders: std::sync::OnceLock<crate::api::jobs::Jobs>,
    /// The actor runtime, once the app's configuration was read.
    pub actors: std::sync::OnceLock<Arc<crate::actors::Actors>>,
    /// The workflow engine, started on first use.
    pub workflows: std::sync::OnceLock<Arc<crate::workflow::Workflows>>,
    /// Where peers' actor calls go (the inbound listener holds it).
    pub actor_door: tandem_proxy::invoke::ActorDoorCell,
    /// The internal port's address as peers on this host reach it.
    internal_address: std::sync::OnceLock<String>,
}

impl Runtime {
    /// `metrics`: made before the first snapshot, whose policies report
    /// to it (`Snapshot::build`).
    pub fn new(
        options: SidecarOptions,
        snapshot: Snapshot,
        app: Option<Arc<AppChannel>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let access = crate::reload::access_policy(&snapshot.configuration);
        let tracer = Arc::new(ArcSwap::new(tandem_proxy::trace::Tracer::off(
            &options.app_id,
        )));
        Self {
            options,
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            app,
            app_health: AppHealth::new(),
            started: std::time::SystemTime::now(),
            invoker: std::sync::OnceLock::new(),
            tracer,
            access: Arc::new(arc_swap::ArcSwapOption::new(access)),
            reloader: std::sync::OnceLock::new(),
            outbound_ready: AtomicBool::new(false),
            ready: watch::channel(false).0,
            extended: RwLock::new(BTreeMap::new()),
            app_subscriptions: RwLock::new(Vec::new()),
            shutdown: watch::channel(false).0,
            subscriptions: std::sync::Mutex::new(Vec::new()),
            relays: std::sync::Mutex::new(Vec::new()),
            streaming: std::sync::Mutex::new((0, Vec::new())),
            configuration: Default::default(),
            jobs: std::sync::OnceLock::new(),
            reminders: std::sync::OnceLock::new(),
            actors: std::sync::OnceLock::new(),
            workflows: std::sync::OnceLock::new(),
            actor_door: Arc::default(),
            internal_address: std::sync::OnceLock::new(),
        }
    }

    pub fn set_invoker(&self, invoker: Arc<tandem_proxy::Invoker>) {
        let _ = self.invoker.set(invoker);
    }

    pub fn invoker(&self) -> Option<&Arc<tandem_proxy::Invoker>> {
        self.invoker.get()
    }

    pub fn set_tracer(&self, tracer: Arc<tandem_proxy::trace::Tracer>) {
        self.tracer.store(tracer);
    }

    /// Spans and trace context (propagation only until tracing is set up).
    pub fn tracer(&self) -> Arc<tandem_proxy::trace::Tracer> {
        self.tracer.load_full()
    }

    /// The tracer's cell, for servers that read it per request.
    pub fn tracer_cell(&self) -> Arc<ArcSwap<tandem_proxy::trace::Tracer>> {
        self.tracer.clone()
    }

    /// Access control's cell, for the internal server.
    pub fn access_cell(&self) -> Arc<arc_swap::ArcSwapOption<tandem_proxy::access::AccessPolicy>> {
        self.access.clone()
    }

    pub fn set_reloader(&self, r: Arc<crate::reload::Reloader>) {
        let _ = self.reloader.set(r);
    }

    pub fn reloader(&self) -> Option<&Arc<crate::reload::Reloader>> {
        self.reloader.get()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Records the internal listener's address (a wildcard bind is
    /// reached on loopback by this host's sidecars).
    pub fn set_internal_address(&self, addr: std::net::SocketAddr) {
        let reach = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let _ = self.internal_address.set(reach.to_string());
    }

    pub fn internal_address(&self) -> Option<String> {
        self.internal_address.get().cloned()
    }

    pub fn app_id(&self) -> &str {
        &self.options.app_id
    }

    pub fn set_outbound_ready(&self) {
        self.outbound_ready.store(true, Ordering::Release);
    }

    pub fn outbound_ready(&self) -> bool {
        self.outbound_ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    pub fn ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once `/healthz` turns 204.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn set_extended(&self, key: String, value: String) {
        if key.is_empty() {
            return;
        }
        self.extended
            .write()
            .expect("metadata lock not poisoned")
            .insert(key, value);
    }

    pub fn extended(&self) -> BTreeMap<String, String> {
        self.extended
            .read()
            .expect("metadata lock not poisoned")
            .clone()
    }

    pub fn set_app_subscriptions(&self, subs: Vec<SubscriptionSpec>) {
        *self
            .app_subscriptions
            .write()
            .expect("subscriptions lock not poisoned") = subs
            .into_iter()
            .map(|s| (s, SubscriptionKind::Programmatic))
            .collect();
    }

    /// Every subscription with its kind: declarative from the snapshot, then
    /// what the app declared.
    pub fn subscriptions(&self) -> Vec<(SubscriptionSpec, SubscriptionKind)> {
        let snap = self.snapshot();
        let mut out: Vec<_> = snap
            .declarative_subscriptions()
            .map(|s| (s.clone(), SubscriptionKind::Declarative))
            .collect();
        out.extend(
            self.app_subscriptions
                .read()
                .expect("subscriptions lock not poisoned")
                .iter()
                .cloned(),
        );
        out.extend(
            self.streaming
                .lock()
                .expect("streaming lock")
                .1
                .iter()
                .map(|(_, s)| (s.clone(), SubscriptionKind::Streaming)),
        );
        out
    }

    /// Configuration `logging.apiLogging`, if any.
    fn api_logging_spec(&self) -> Option<tandem_config::ApiLoggingSpec> {
        self.snapshot()
            .configuration
            .spec
            .logging
            .as_ref()
            .and_then(|l| l.api_logging.clone())
    }

    /// Whether `given` is the API token (`DAPR_API_TOKEN`), compared in
    /// constant time so the answer's timing says nothing about how much of
    /// a guess was right. True when no token is set.
    pub fn api_token_ok(&self, given: Option<&[u8]>) -> bool {
        let Some(token) = &self.options.api_token else {
            return true;
        };
        given.is_some_and(|g| same_secret(token.as_bytes(), g))
    }

    /// Whether API calls are logged: the flag when given (tri-state, as in
    /// daprd), otherwise Configuration `logging.apiLogging.enabled`.
    pub fn api_logging(&self) -> bool {
        self.options
            .enable_api_logging
            .unwrap_or_else(|| self.api_logging_spec().is_some_and(|a| a.enabled))
    }

    /// Configuration `logging.apiLogging.omitHealthChecks`.
    pub fn omit_health_check_logs(&self) -> bool {
        self.api_logging_spec()
            .is_some_and(|a| a.omit_health_checks)
    }

    /// Lists a streaming subscription in the metadata API until removed.
    pub fn add_streaming_subscription(&self, spec: SubscriptionSpec) -> u64 {
        let mut s = self.streaming.lock().expect("streaming lock");
        s.0 += 1;
        let id = s.0;
        s.1.push((id, spec));
        id
    }

    pub fn remove_streaming_subscription(&self, id: u64) {
        self.streaming
            .lock()
            .expect("streaming lock")
            .1
            .retain(|(i, _)| *i != id);
    }

    pub fn keep_subscription(&self, handle: crate::components::pubsub::SubscriptionHandle) {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .push(handle);
    }

    pub fn keep_relay(&self, handle: crate::components::pubsub::SubscriptionHandle) {
        self.relays.lock().expect("relays lock").push(handle);
    }

    /// Stops the outbox relays (at shutdown).
    pub fn stop_relays(&self) {
        self.relays.lock().expect("relays lock").clear();
    }

    /// Stops every delivery loop.
    pub fn stop_subscriptions(&self) {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .clear();
    }

    pub fn keep_configuration_subscription(
        &self,
        id: String,
        store: String,
        handle: crate::components::pubsub::SubscriptionHandle,
    ) {
        self.configuration
            .lock()
            .expect("configuration subscriptions lock")
            .insert(id, (store, handle));
    }

    /// Stops configuration subscription `id` of `store`; whether there was one.
    pub fn drop_configuration_subscription(&self, store: &str, id: &str) -> bool {
        let mut subs = self
            .configuration
            .lock()
            .expect("configuration subscriptions lock");
        match subs.get(id) {
            Some((s, _)) if s == store => subs.remove(id).is_some(),
            _ => false,
        }
    }

    /// Asks the sidecar to shut down gracefully.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// `secret == given`, taking the same time whichever byte differs (the
/// length is not secret).
pub fn same_secret(secret: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        diff |= s ^ given.get(i).copied().unwrap_or(!s);
    }
    diff == 0
}

#[cfg(test)]
mod secret_tests {
    #[test]
    fn same_secret_compares_every_byte() {
        use super::same_secret;
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"s3cret", b"s3crett"));
        assert!(!same_secret(b"s3cret", b""));
        assert!(same_secret(b"", b""));
    }
}
