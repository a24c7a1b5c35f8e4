//! Builds one sidecar from options: binds its listeners first (a port clash
//! fails fast), loads resources and initialises components, serves the APIs,
//! then walks the app-side startup sequence (dapr-wire.md §3) in the
//! background. Used by `tandem sidecar` and, in-process, by `tandem run`.

use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tandem_config::{Configuration, LoadContext, SidecarOptions, load_configuration};
use tandem_control::{Runtime, Snapshot, api};
use tandem_proxy::{AppChannel, AppChannelConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use tandem_control::reload::ResourceSource;

pub struct RunningSidecar {
    pub runtime: Arc<Runtime>,
    servers: Vec<JoinHandle<()>>,
    /// This app's entry with its name resolver (a registry file, an mDNS
    /// announcement), withdrawn when the sidecar ends.
    /// Applies resource changes; holds this app's name-resolution entry
    /// (removed when the sidecar stops).
    reloader: Arc<tandem_control::reload::Reloader>,
    /// `--transparent`: the iptables rules, removed when the sidecar ends.
    _rules: Option<Rules>,
}

async fn bind(addr: &str, port: u16, what: &str) -> Result<TcpListener> {
    TcpListener::bind((addr, port)).await.with_context(|| {
        format!("cannot listen on {addr}:{port} for the {what} (is another sidecar using it?)")
    })
}

/// This sidecar's mTLS identity: signed by the certificate service at
/// `--sentry-address` (or Configuration `mtls.sentryAddress`) against the
/// trust anchors in `DAPR_TRUST_ANCHORS` (else the local CA folder's
/// bundle), with the token in the file `DAPR_SENTRY_TOKEN_FILE` names; with
/// no sentry, self-issued from the local CA folder (made if missing).
async fn workload_identity(
    runtime: &Runtime,
    namespace: &str,
) -> Result<Arc<tandem_proxy::identity::Identity>> {
    use tandem_proxy::identity::{CA_FILE, Identity};
    let config = &runtime.snapshot().configuration.spec;
    let trust_domain = config
        .access_control
        .as_ref()
        .and_then(|a| a.trust_domain.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "public".into());
    let sentry = runtime
        .options
        .sentry_address
        .clone()
        .or_else(|| config.mtls.as_ref().and_then(|m| m.sentry_address.clone()));
    let dir = crate::cli::ca::dir();
    let app = runtime.app_id();
    let id = match sentry.filter(|s| !s.is_empty()) {
        Some(address) => {
            let anchors = match std::env::var("DAPR_TRUST_ANCHORS") {
                Ok(pem) if !pem.trim().is_empty() => pem.into_bytes(),
                _ => std::fs::read(dir.join(CA_FILE)).map_err(|e| {
                    anyhow!(
                        "mTLS with the certificate service at {address} needs its trust anchors: set DAPR_TRUST_ANCHORS to the PEM bundle ({}: {e})",
                        dir.join(CA_FILE).display()
                    )
                })?,
            };
            let token = match std::env::var_os("DAPR_SENTRY_TOKEN_FILE") {
                Some(path) => std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| {
                        anyhow!(
                            "DAPR_SENTRY_TOKEN_FILE {}: {e}",
                            PathBuf::from(&path).display()
                        )
                    })?,
                None => String::new(),
            };
            let client = tandem_proxy::sentry::Client::new(&address, &anchors, token)
                .map_err(|e| anyhow!("mTLS: {e}"))?;
            let id = Identity::from_sentry(client, &trust_domain, namespace, app)
                .await
                .map_err(|e| anyhow!("mTLS: {e}"))?;
            tracing::info!(id = %id.spiffe_id, sentry = %address, "mTLS on: workload certificate signed by the certificate service");
            id
        }
        None => {
            let id = Identity::new(&dir, true, &trust_domain, namespace, app)
                .map_err(|e| anyhow!("mTLS: {e}"))?;
            tracing::info!(id = %id.spiffe_id, ca = %dir.display(), "mTLS on: workload certificate issued");
            id
        }
    };
    id.renew_in_background();
    id.watch_trust();
    Ok(id)
}

/// Starts a sidecar and returns once its APIs serve and its components are
/// loaded (`healthz/outbound` is 204). The app side continues in background.
pub async fn start(mut options: SidecarOptions, source: ResourceSource) -> Result<RunningSidecar> {
    if let Some(why) = options.unsupported() {
        return Err(anyhow!(why));
    }
    if options.transparent {
        options.transparent_outbound_port.get_or_insert(15001);
        options.transparent_inbound_port.get_or_insert(15006);
    }
    let addr = options
        .listen_addresses()
        .into_iter()
        .next()
        .unwrap_or_else(|| "127.0.0.1".into());
    let http_listener = bind(&addr, options.http_port(), "Dapr HTTP API").await?;
    let grpc_listener = bind(&addr, options.grpc_port(), "Dapr gRPC API").await?;
    let metrics_listener = if options.enable_metrics {
        Some(
            bind(
                &options.metrics_listen_address,
                options.metrics_port_or_default(),
                "metrics",
            )
            .await?,
        )
    } else {
        None
    };

    // Record the ports actually bound (port 0 asks for any free one).
    let mut options = options;
    options.dapr_http_port = Some(http_listener.local_addr()?.port());
    options.dapr_grpc_port = Some(grpc_listener.local_addr()?.port());
    if let Some(l) = &metrics_listener {
        options.metrics_port = Some(l.local_addr()?.port());
    }

    let ctx = LoadContext {
        app_id: options.app_id.clone(),
        namespace: options.namespace.clone(),
    };
    let resources = source.load(&ctx).map_err(|e| anyhow!("{e}"))?;
    for (at, why) in &resources.skipped {
        tracing::info!(resource = %at, "not loaded: {why}");
    }
    let configuration = match &options.config {
        Some(path) => load_configuration(path).map_err(|e| anyhow!("{e}"))?,
        None => Configuration::default(),
    };

    let app = match options.app_port {
        Some(port) => Some(Arc::new(
            AppChannel::new(AppChannelConfig {
                app_id: options.app_id.clone(),
                address: options.app_channel_address.clone(),
                port,
                protocol: options.app_protocol,
                api_token: options.app_api_token.clone(),
                max_concurrency: usize::try_from(options.app_max_concurrency)
                    .ok()
                    .filter(|n| *n > 0),
            })
            .map_err(|e| anyhow!("{e}"))?,
        )),
        None => None,
    };

    // Metrics exist before components so init failures are counted.
    let mut skipped = Vec::new();
    let metrics = Arc::new(tandem_proxy::Metrics::new(&options.app_id));
    let snapshot = Snapshot::build(
        1,
        resources,
        configuration,
        &ctx,
        &metrics,
        None,
        |name, why| {
            skipped.push((name.to_string(), why.to_string()));
        },
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    let runtime = Arc::new(Runtime::new(options, snapshot, app, metrics));
    for (name, _) in &skipped {
        runtime.metrics.component_init_failed(name, "init");
    }
    for _ in &runtime.snapshot().components {
        runtime.metrics.component_loaded();
    }

    let mut servers = Vec::new();
    servers.push(tokio::spawn(api::http::serve(
        http_listener,
        runtime.clone(),
    )));
    let grpc_rt = runtime.clone();
    servers.push(tokio::spawn(async move {
        if let Err(e) = api::grpc::serve(grpc_listener, grpc_rt).await {
            tracing::error!(error = %e, "gRPC API stopped");
        }
    }));
    match metrics_listener {
        Some(l) if metrics_enabled_by(&runtime.snapshot().configuration) => {
            serve_metrics_on_own_thread(l.into_std()?, runtime.clone())?;
        }
        Some(_) => tracing::info!("metrics disabled by Configuration spec.metric.enabled"),
        None => {}
    }
    let namespace = runtime.options.namespace.clone().unwrap_or_default();
    let internal_port = runtime.options.dapr_internal_grpc_port.unwrap_or(0);
    let resolver = Arc::new(
        tandem_proxy::Resolver::from_spec(
            runtime
                .snapshot()
                .configuration
                .spec
                .name_resolution
                .as_ref(),
            tandem_control::home::dir().join("registry"),
            internal_port,
        )
        .map_err(|e| anyhow!("Configuration: {e}"))?,
    );
    // Peer sidecars reach this app through the internal port: on loopback
    // when every peer is on this host (the local registry), on every
    // interface when peers are found on the network — IPv6 and IPv4 (a
    // dual-stack socket; IPv4 alone where the host has no IPv6), since
    // name resolution (mDNS) announces the host's addresses of both.
    let internal_listener = if resolver.name() == "local" {
        bind("127.0.0.1", internal_port, "internal (sidecar-to-sidecar)").await?
    } else {
        match bind("::", internal_port, "internal (sidecar-to-sidecar)").await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 listener; IPv4 only");
                bind("0.0.0.0", internal_port, "internal (sidecar-to-sidecar)").await?
            }
        }
    };
    let internal_addr = internal_listener.local_addr()?;
    runtime.set_internal_address(internal_addr);
    let registration = resolver
        .register(&tandem_proxy::resolve::Me {
            app_id: runtime.app_id().to_string(),
            namespace: namespace.clone(),
            address: internal_addr,
            http_port: runtime.options.http_port(),
        })
        .map_err(|e| anyhow!("name resolution ({}): {e}", resolver.name()))?;
    tracing::info!(resolver = resolver.name(), internal = %internal_addr, "name resolution ready");
    let identity = if runtime.options.enable_mtls {
        Some(workload_identity(&runtime, &namespace).await?)
    } else {
        None
    };
    let tls = match &identity {
        Some(id) => Some((
            id.client_config().map_err(|e| anyhow!("mTLS: {e}"))?,
            id.server_config().map_err(|e| anyhow!("mTLS: {e}"))?,
        )),
        None => None,
    };
    if let Some(tracer) =
        tandem_control::reload::tracer_for(runtime.app_id(), &runtime.snapshot().configuration)
            .map_err(|e| anyhow!("{e}"))?
    {
        runtime.set_tracer(tracer);
    }
    let invoker = Arc::new(
        tandem_proxy::Invoker::new(
            resolver,
            runtime.app_id().to_string(),
            namespace,
            tls.as_ref().map(|(c, _)| c.clone()),
        )
        .with_metrics(runtime.metrics.clone()),
    );
    runtime.set_invoker(invoker.clone());
    if let Some(port) = runtime.options.transparent_inbound_port {
        let listener = bind("0.0.0.0", port, "transparent inbound door").await?;
        let allow = runtime.options.transparent_inbound_plaintext == "allow";
        tracing::info!(
            port,
            plaintext_from_outside = allow,
            "transparent mode: inbound door serving"
        );
        servers.push(tokio::spawn(api::transparent::serve_inbound(
            listener,
            runtime.clone(),
            internal_addr,
            allow,
        )));
    }
    if let Some(port) = runtime.options.transparent_outbound_port {
        let listener = bind("0.0.0.0", port, "transparent outbound door").await?;
        tracing::info!(port, "transparent mode: outbound door serving");
        servers.push(tokio::spawn(api::transparent::serve_outbound(
            listener,
            runtime.clone(),
            runtime.options.protocol_detect_timeout,
        )));
    }
    servers.push(tokio::spawn(tandem_proxy::invoke::serve_inbound(
        internal_listener,
        tandem_proxy::invoke::Inbound {
            invoker,
            app: runtime.app.clone(),
            max_body: runtime.options.max_body_size,
            tls: tls.map(|(_, s)| s),
            access: runtime.access_cell(),
            tracer: runtime.tracer_cell(),
            metrics: runtime.metrics.clone(),
            actors: runtime.actor_door.clone(),
        },
        runtime.shutdown_signal(),
    )));
    let reloader = tandem_control::reload::Reloader::new(
        &runtime,
        source,
        runtime.options.config.clone(),
        ctx.clone(),
    );
    reloader.set_internal(internal_addr, registration);
    reloader.watch();
    tandem_control::outbox::start(&runtime);
    runtime.set_outbound_ready();
    tracing::info!(
        app_id = %runtime.app_id(),
        http_port = runtime.options.http_port(),
        grpc_port = runtime.options.grpc_port(),
        metrics_port = if runtime.options.enable_metrics { runtime.options.metrics_port_or_default() } else { 0 },
        "dapr APIs are serving"
    );

    servers.push(tokio::spawn(app_startup(runtime.clone())));
    let rules = if runtime.options.transparent {
        Some(install_rules(&runtime, internal_addr.port())?)
    } else {
        None
    };
    Ok(RunningSidecar {
        runtime,
        servers,
        reloader,
        _rules: rules,
    })
}

/// `--transparent`: the rules go in at start, excluding this process's
/// uid, and come out when the sidecar ends (`Rules` on drop).
fn install_rules(rt: &Runtime, internal_port: u16) -> Result<Rules> {
    let o = &rt.options;
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|u| u.parse::<u32>().ok())
        .ok_or_else(|| anyhow!("--transparent: cannot tell this process's uid"))?;
    let redirect = tandem_proxy::iptables::Redirect {
        inbound_port: o.transparent_inbound_port.unwrap_or(15006),
        outbound_port: o.transparent_outbound_port.unwrap_or(15001),
        proxy_uid: Some(uid),
        proxy_gid: None,
        skip_inbound_ports: vec![
            o.http_port(),
            o.grpc_port(),
            o.metrics_port_or_default(),
            internal_port,
        ],
        skip_outbound_ports: Vec::new(),
        skip_inbound_subnets: Vec::new(),
        skip_outbound_subnets: Vec::new(),
    };
    let n = crate::cli::iptables::apply(&redirect, false)
        .map_err(|e| anyhow!("--transparent: {e} (transparent mode needs root)"))?;
    tracing::info!(
        rules = n,
        sidecar_uid = uid,
        "transparent mode: iptables rules installed"
    );
    if uid == 0 {
        tracing::warn!(
            "transparent mode: the sidecar runs as root, so processes running as root are not redirected; run the app as another user (tandem run --app-uid)"
        );
    }
    Ok(Rules)
}

/// Removes the transparent-mode rules when dropped.
struct Rules;

impl Drop for Rules {
    fn drop(&mut self) {
        match crate::cli::iptables::clear(false) {
            Ok(_) => tracing::info!("transparent mode: iptables rules removed"),
            Err(e) => {
                tracing::error!(error = %e, "transparent mode: rules not removed; run `tandem iptables remove`")
            }
        }
    }
}

fn metrics_enabled_by(config: &Configuration) -> bool {
    let spec = config.spec.metrics.as_ref().or(config.spec.metric.as_ref());
    spec.and_then(|m| m.enabled).unwrap_or(true)
}

/// Metrics get their own thread and single-threaded runtime, so a scrape
/// never competes with API requests for the main workers (ztunnel's rule).
fn serve_metrics_on_own_thread(listener: std::net::TcpListener, rt: Arc<Runtime>) -> Result<()> {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    std::thread::Builder::new()
        .name("tandem-metrics".into())
        .spawn(move || {
            io.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => api::http::serve_metrics(l, rt).await,
                    Err(e) => tracing::error!(error = %e, "metrics listener unusable"),
                }
            });
        })
        .context("cannot start the metrics thread")?;
    Ok(())
}

/// The app side of startup: wait for the app port, `/dapr/config`,
/// subscriptions, health; then `/healthz` turns 204.
/// Starts the actor runtime (its placement in the host's SQLite file):
/// a host of the app's actor types, or only a caller of others' actors.
fn start_actors(rt: &Arc<Runtime>, config: tandem_control::actors::config::ActorConfig) {
    if rt.actors.get().is_some() {
        return;
    }
    let Some(address) = rt.internal_address() else {
        return;
    };
    // The placement table lives where the scheduler's jobs do: the
    // coordination component's engine (chosen once, at start: a table
    // must not change engines under running actors), else the host's file.
    let placement = match rt.snapshot().coordination.clone() {
        Some((_, c)) => c.placement,
        None => match tandem_control::actors::embedded_placement() {
            Ok((p, _)) => p,
            Err(e) => {
                tracing::warn!(error = %e, "actors: the placement table cannot be opened; actors are not available");
                return;
            }
        },
    };
    if !config.entities.is_empty() {
        tracing::info!(types = ?config.entities, placement = %placement.what(), "actors: hosting actor types");
    }
    let actors = tandem_control::actors::Actors::start(rt, config, address, placement);
    tandem_control::workflow::Workflows::launch(rt);
    let _ = rt
        .actor_door
        .set(Arc::new(tandem_control::actors::Door(Arc::downgrade(
            &actors,
        ))));
    let _ = rt.actors.set(actors);
}

async fn app_startup(rt: Arc<Runtime>) {
    let Some(app) = rt.app.clone() else {
        start_actors(&rt, Default::default());
        rt.set_ready();
        tracing::info!("no app port given: sidecar is ready");
        return;
    };
    let mut shutdown = rt.shutdown_signal();
    tokio::select! {
        _ = app.wait_until_listening() => {}
        _ = shutdown.changed() => return,
    }
    tracing::info!(port = app.config().port, "app is listening");
    let mut actor_config = tandem_control::actors::config::ActorConfig::default();
    if !rt.options.init_endpoint_disabled("config") {
        match app.app_config().await {
            Ok(Some(cfg)) => {
                tracing::debug!(config = %cfg, "app configuration read");
                match tandem_control::actors::config::ActorConfig::parse(&cfg) {
                    Ok(c) => actor_config = c,
                    Err(e) => {
                        tracing::warn!(error = %e, "the app's actor configuration (GET /dapr/config) is not valid; its actors are not registered")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the app configuration"),
        }
    }
    start_actors(&rt, actor_config);
    if !rt.options.init_endpoint_disabled("subscribe") {
        match app.subscriptions().await {
            Ok(subs) => {
                tracing::info!(count = subs.len(), "app subscriptions read");
                rt.set_app_subscriptions(subs);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the app's subscriptions"),
        }
    }
    let opts = &rt.options;
    if opts.enable_app_health_check {
        let health = rt.app_health.clone();
        let probe = tokio::spawn(health.clone().probe_loop(
            app.clone(),
            opts.app_health_check_path.clone(),
            opts.app_health_probe_interval,
            opts.app_health_probe_timeout,
            opts.app_health_threshold,
        ));
        let mut watch = health.subscribe();
        tokio::select! {
            _ = watch.wait_for(|h| *h) => {}
            _ = shutdown.changed() => { probe.abort(); return; }
        }
        rt.set_ready();
        tandem_control::delivery::start(&rt);
        tracing::info!("app passed its health check: sidecar is ready");
        // Like Dapr: no events for an unhealthy app; they wait in the broker
        // and flow again when it recovers.
        loop {
            tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if *watch.borrow_and_update() {
                        tracing::info!("app recovered: resuming event delivery");
                        tandem_control::delivery::start(&rt);
                    } else {
                        tracing::warn!("app unhealthy: pausing event delivery");
                        rt.stop_subscriptions();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        probe.abort();
    } else {
        rt.app_health.set(true);
        rt.set_ready();
        tandem_control::delivery::start(&rt);
        tracing::info!("sidecar is ready");
    }
}

impl RunningSidecar {
    /// Waits until shutdown is requested, then lets servers drain for up to
    /// `--dapr-graceful-shutdown-seconds`.
    pub async fn wait(self) {
        let mut signal = self.runtime.shutdown_signal();
        let _ = signal.wait_for(|s| *s).await;
        // Take no new messages; in-flight deliveries finish or go back to
        // the broker.
        self.runtime.stop_subscriptions();
        self.runtime.stop_relays();
        let grace = Duration::from_secs(self.runtime.options.dapr_graceful_shutdown_seconds);
        let drain = futures_join(self.servers);
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "graceful shutdown did not finish in {}s; stopping",
                grace.as_secs()
            );
        }
        self.reloader.unregister();
        tracing::info!(app_id = %self.runtime.app_id(), "sidecar stopped");
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
