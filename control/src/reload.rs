//! Hot reload (DESIGN "Hot reload"): watch → parse and validate as a whole
//! → build only what changed → swap. The resources dirs and the `--config`
//! file are watched with inotify and looked at every 5 s besides (every
//! second where no inotify instance is left); their names and contents are
//! hashed, and a change must hold still for 150 ms before it is read. A
//! change that does not load, or a component that does not initialise
//! (without `ignoreErrors`), is refused: the running snapshot stays, and
//! the error — with file and line — is logged, counted
//! (`tandem_reload_total{result="refused"}`) and shown by the control
//! API. Otherwise a new snapshot is built, keeping every
//! component whose resource is unchanged (its connections too), and
//! swapped in: requests already running finish on the snapshot they
//! loaded, and a replaced component closes when its last user drops it.
//! What lives outside the snapshot follows: access control, the tracer,
//! name resolution, and event delivery (restarted only when pub/sub
//! components, bindings or subscriptions changed; unacknowledged messages
//! come again, as at-least-once allows). Listener-level settings (ports,
//! mTLS on/off, metrics on/off, the internal listener's interface) are
//! reported as needing a restart.
//!
//! Configuration feature `HotReload: false` stops the watching; an explicit
//! reload (control API, `tandem apply`) still applies.

use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tandem_config::{Configuration, LoadContext, ResourceSet};

/// Where resources come from.
#[derive(Clone, Debug)]
pub enum ResourceSource {
    Dirs(Vec<PathBuf>),
    /// The embedded defaults (no resources dir): nothing to watch.
    Embedded,
}

impl ResourceSource {
    pub fn load(&self, ctx: &LoadContext) -> Result<ResourceSet, String> {
        match self {
            ResourceSource::Dirs(dirs) => {
                tandem_config::load_dirs(dirs, ctx).map_err(|e| e.to_string())
            }
            ResourceSource::Embedded => {
                crate::defaults::embedded_resources(ctx).map_err(|e| e.to_string())
            }
        }
    }
}

/// Access control from a Configuration.
pub fn access_policy(c: &Configuration) -> Option<Arc<tandem_proxy::access::AccessPolicy>> {
    c.spec
        .access_control
        .clone()
        .map(|a| Arc::new(tandem_proxy::access::AccessPolicy::new(a)))
}

/// Whether the `HotReload` feature is on (the default, as in Dapr 1.18).
pub fn hot_reload_enabled(c: &Configuration) -> bool {
    c.spec
        .features
        .iter()
        .find(|f| f.name == "HotReload")
        .is_none_or(|f| f.enabled)
}

/// Configuration `tracing`: an OTLP collector (`otel`, gRPC or HTTP) or
/// Zipkin, and the sampling rate; the OTel environment stands in for a
/// missing endpoint (as daprd reads it: `OTEL_EXPORTER_OTLP[_TRACES]_
/// ENDPOINT`, `_PROTOCOL`, `_INSECURE`, `_HEADERS`, `_TIMEOUT` in ms).
/// `None`: no exporter (trace context still propagates).
pub fn tracer_for(
    app_id: &str,
    c: &Configuration,
) -> Result<Option<Arc<tandem_proxy::trace::Tracer>>, String> {
    use tandem_proxy::trace::{Export, Sink, Tracer};
    let Some(t) = c.spec.tracing.as_ref() else {
        return Ok(None);
    };
    let rate = t.sampling_rate.clone().unwrap_or_else(|| "1".into());
    let env = |name: &str| {
        std::env::var(format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| {
                std::env::var(format!("OTEL_EXPORTER_OTLP_{name}"))
                    .ok()
                    .filter(|v| !v.is_empty())
            })
    };
    let otel = t.otel.as_ref();
    let mut export = Export {
        headers: otel.map(|o| o.headers.0.clone()).unwrap_or_default(),
        timeout: otel.and_then(|o| o.timeout).map(|t| t.0),
    };
    if export.headers.is_empty()
        && let Some(h) = env("HEADERS")
    {
        export.headers = tandem_config::resources::OtelHeaders::parse(&h)
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_HEADERS: {e}"))?
            .0;
    }
    if export.timeout.is_none()
        && let Some(ms) = env("TIMEOUT")
    {
        let ms: u64 = ms.trim().parse().map_err(|_| {
            format!("OTEL_EXPORTER_OTLP_TIMEOUT `{ms}` is not a number of milliseconds")
        })?;
        export.timeout = (ms > 0).then(|| std::time::Duration::from_millis(ms));
    }
    // Configuration first (otel, then zipkin), then the OTel environment.
    let sink = match (otel, &t.zipkin) {
        // daprd: `isSecure` is true unless set false; a URL's scheme says
        // it outright.
        (Some(o), _) if !o.endpoint_address.is_empty() => Sink::otlp(
            &o.endpoint_address,
            o.is_secure.unwrap_or(true),
            o.protocol.as_deref().unwrap_or("grpc"),
        ),
        (_, Some(z)) if !z.endpoint_address.is_empty() => Sink::zipkin(&z.endpoint_address),
        _ => match env("ENDPOINT") {
            Some(e) => {
                let protocol = env("PROTOCOL").unwrap_or_else(|| "http/protobuf".into());
                let insecure = std::env::var("OTEL_EXPORTER_OTLP_INSECURE")
                    .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
                Sink::otlp(&e, !insecure && e.starts_with("https://"), &protocol)
            }
            None => return Ok(None),
        },
    }
    .map_err(|e| format!("Configuration: {e}"))?;
    let tracer = Tracer::new(app_id, &rate, sink.clone(), export)?;
    tracing::info!(sink = ?sink, sampling_rate = %rate, "tracing");
    Ok(Some(tracer))
}

/// The result of one reload, as the control API shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// RFC 3339.
    pub at: String,
    /// What asked: `file change`, `api`, `apply`, …
    pub trigger: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The generation serving after it.
    pub generation: u64,
    /// What changed (`component/cache`, `configuration/tracing`, …).
    pub changed: Vec<String>,
    /// Changes seen but not applied until a restart.
    pub needs_restart: Vec<String>,
    pub took_ms: u64,
}

/// How many reloads [`Reloader::recent`] keeps.
pub const RECENT: usize = 20;

pub struct Reloader {
    rt: Weak<Runtime>,
    source: ResourceSource,
    config: Option<PathBuf>,
    ctx: LoadContext,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    last: Mutex<Option<Outcome>>,
    /// The last [`RECENT`] reloads that applied something or were refused,
    /// newest last (the dashboard's history of changes).
    recent: Mutex<std::collections::VecDeque<Outcome>>,
    /// The internal listener's address (name resolution is rebuilt for it)
    /// and this sidecar's registration with the resolver.
    internal: Mutex<Option<std::net::SocketAddr>>,
    registration: Mutex<Option<Box<dyn Send + Sync>>>,
}

/// What a change touches besides the snapshot itself.
#[derive(Default)]
struct Effects {
    changed: Vec<String>,
    needs_restart: Vec<String>,
    access: bool,
    tracing: bool,
    resolver: bool,
    delivery: bool,
}

/// The resources of one kind that differ between `old` and `new` (by name
/// and content), each noted in `out` as `<kind>/<name>`; returns them (the
/// new version, or the old one when removed).
fn diff<'a, T: PartialEq>(
    kind: &str,
    old: &'a [tandem_config::Loaded<T>],
    new: &'a [tandem_config::Loaded<T>],
    name: fn(&T) -> &String,
    out: &mut Vec<String>,
) -> Vec<&'a T> {
    let by_name = |set: &'a [tandem_config::Loaded<T>]| -> BTreeMap<&'a String, &'a T> {
        set.iter()
            .map(|l| (name(&l.resource), &l.resource))
            .collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    let mut changed = Vec::new();
    for (n, r) in &new {
        match old.get(n) {
            None => out.push(format!("{kind}/{n} (added)")),
            Some(o) if o != r => out.push(format!("{kind}/{n}")),
            _ => continue,
        }
        changed.push(*r);
    }
    for (n, r) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        out.push(format!("{kind}/{n} (removed)"));
        changed.push(*r);
    }
    changed
}

fn effects(old: &Snapshot, resources: &ResourceSet, config: &Configuration) -> Effects {
    let mut e = Effects::default();
    let (was, now) = (&old.resources, resources);
    let components = diff(
        "component",
        &was.components,
        &now.components,
        |c| &c.metadata.name,
        &mut e.changed,
    );
    // Pub/sub components and bindings feed event delivery.
    e.delivery = components
        .iter()
        .any(|c| c.spec.type_.starts_with("pubsub.") || c.spec.type_.starts_with("bindings."));
    let subscriptions = diff(
        "subscription",
        &was.subscriptions,
        &now.subscriptions,
        |s| &s.metadata.name,
        &mut e.changed,
    );
    let resiliencies = diff(
        "resiliency",
        &was.resiliencies,
        &now.resiliencies,
        |r| &r.metadata.name,
        &mut e.changed,
    );
    // Delivery loops hold their subscriptions and inbound policies.
    e.delivery |= !subscriptions.is_empty() || !resiliencies.is_empty();
    diff(
        "httpendpoint",
        &was.http_endpoints,
        &now.http_endpoints,
        |h| &h.metadata.name,
        &mut e.changed,
    );
    let (o, n) = (&old.configuration.spec, &config.spec);
    let mut section = |name: &str, changed: bool| {
        if changed {
            e.changed.push(format!("configuration/{name}"));
        }
        changed
    };
    e.access = section("accessControl", o.access_control != n.access_control);
    e.tracing = section("tracing", o.tracing != n.tracing);
    e.resolver = section("nameResolution", o.name_resolution != n.name_resolution);
    section("secrets", o.secrets != n.secrets);
    section("features", o.features != n.features);
    section("api", o.api != n.api);
    if o.mtls != n.mtls {
        e.needs_restart.push("configuration/mtls".into());
    }
    if o.metric != n.metric || o.metrics != n.metrics {
        e.needs_restart.push("configuration/metrics".into());
    }
    e
}

impl Reloader {
    pub fn new(
        rt: &Arc<Runtime>,
        source: ResourceSource,
        config: Option<PathBuf>,
        ctx: LoadContext,
    ) -> Arc<Self> {
        let r = Arc::new(Self {
            rt: Arc::downgrade(rt),
            source,
            config,
            ctx,
            busy: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            recent: Mutex::default(),
            internal: Mutex::new(None),
            registration: Mutex::new(None),
        });
        rt.set_reloader(r.clone());
        r
    }

    /// Hands over the internal address and the resolver registration, so
    /// a change of name resolution can register this sidecar again.
    pub fn set_internal(&self, addr: std::net::SocketAddr, registration: Box<dyn Send + Sync>) {
        *self.internal.lock().expect("internal") = Some(addr);
        *self.registration.lock().expect("registration") = Some(registration);
    }

    /// Takes this sidecar out of name resolution (at stop).
    pub fn unregister(&self) {
        self.registration.lock().expect("registration").take();
    }

    pub fn last(&self) -> Option<Outcome> {
        self.last.lock().expect("last reload").clone()
    }

    /// Reloads that changed something or were refused, oldest first.
    pub fn recent(&self) -> Vec<Outcome> {
        self.recent
            .lock()
            .expect("recent reloads")
            .iter()
            .cloned()
            .collect()
    }

    /// The first resources dir (where `PUT` writes documents), if any.
    pub fn resources_dir(&self) -> Option<&PathBuf> {
        match &self.source {
            ResourceSource::Dirs(d) => d.first(),
            ResourceSource::Embedded => None,
        }
    }

    fn load(&self) -> Result<(ResourceSet, Configuration), String> {
        let resources = self.source.load(&self.ctx)?;
        let config = match &self.config {
            Some(p) => tandem_config::load_configuration(p).map_err(|e| e.to_string())?,
            None => Configuration::default(),
        };
        Ok((resources, config))
    }

    /// Reads everything again and applies what changed. `Err` (and the
    /// running snapshot untouched) when the change is refused.
    pub async fn reload(&self, trigger: &str) -> Outcome {
        let _one = self.busy.lock().await;
        let started = Instant::now();
        let Some(rt) = self.rt.upgrade() else {
            return self.record(trigger, started, 0, Err("the sidecar is stopping".into()));
        };
        let old = rt.snapshot();
        let result = self.apply(&rt, &old).await;
        let generation = rt.snapshot().generation;
        rt.metrics.reload(result.is_ok(), generation);
        self.record(trigger, started, generation, result)
    }

    fn record(
        &self,
        trigger: &str,
        started: Instant,
        generation: u64,
        result: Result<Effects, String>,
    ) -> Outcome {
        let (ok, error, changed, needs_restart) = match result {
            Ok(e) => (true, None, e.changed, e.needs_restart),
            Err(e) => (false, Some(e), Vec::new(), Vec::new()),
        };
        let outcome = Outcome {
            at: crate::clock::rfc3339_utc(crate::clock::now_ms()),
            trigger: trigger.to_string(),
            ok,
            error,
            generation,
            changed,
            needs_restart,
            took_ms: started.elapsed().as_millis() as u64,
        };
        match (&outcome.error, outcome.changed.is_empty()) {
            (Some(e), _) => {
                tracing::error!(trigger, error = %e, "reload refused; the running configuration stays")
            }
            (None, false) => tracing::info!(
                trigger,
                generation,
                changed = ?outcome.changed,
                needs_restart = ?outcome.needs_restart,
                took_ms = outcome.took_ms,
                "reloaded"
            ),
            (None, true) => tracing::debug!(trigger, "reload: nothing changed"),
        }
        if !outcome.ok || !outcome.changed.is_empty() || !outcome.needs_restart.is_empty() {
            let mut recent = self.recent.lock().expect("recent reloads");
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(outcome.clone());
        }
        *self.last.lock().expect("last reload") = Some(outcome.clone());
        outcome
    }

    async fn apply(&self, rt: &Arc<Runtime>, old: &Arc<Snapshot>) -> Result<Effects, String> {
        let (resources, config) = self.load()?;
        let effects = effects(old, &resources, &config);
        if effects.changed.is_empty() {
            return Ok(effects);
        }
        // Everything that can fail is made before anything is swapped.
        let tracer = if effects.tracing {
            Some(tracer_for(rt.app_id(), &config)?)
        } else {
            None
        };
        let mut needs_restart = effects.needs_restart;
        let resolver = if effects.resolver {
            let port = self
                .internal
                .lock()
                .expect("internal")
                .map(|a| a.port())
                .unwrap_or(0);
            let r = tandem_proxy::Resolver::from_spec(
                config.spec.name_resolution.as_ref(),
                crate::home::dir().join("registry"),
                port,
            )
            .map_err(|e| format!("Configuration nameResolution: {e}"))?;
            let was_local = old
                .configuration
                .spec
                .name_resolution
                .as_ref()
                .is_none_or(|n| matches!(n.component.as_str(), "" | "local"));
            if was_local && r.name() != "local" {
                needs_restart.push(
                    "configuration/nameResolution (the internal port listens on loopback only until a restart)"
                        .into(),
                );
            }
            Some(Arc::new(r))
        } else {
            None
        };
        let mut skipped = Vec::new();
        let snapshot = Snapshot::build(
            old.generation + 1,
            resources,
            config,
            &self.ctx,
            &rt.metrics,
            Some(old),
            |name, why| skipped.push((name.to_string(), why.to_string())),
        )
        .await
        .map_err(|e| e.to_string())?;
        for (name, _) in &skipped {
            rt.metrics.component_init_failed(name, "init");
        }
        let access = effects
            .access
            .then(|| access_policy(&snapshot.configuration));
        rt.snapshot.store(Arc::new(snapshot));
        crate::api::jobs::reconfigure(rt);
        if let Some(a) = access {
            rt.access_cell().store(a);
        }
        if let Some(t) = tracer {
            rt.set_tracer(t.unwrap_or_else(|| tandem_proxy::trace::Tracer::off(rt.app_id())));
        }
        if let (Some(r), Some(invoker)) = (resolver, rt.invoker()) {
            if let Some(addr) = *self.internal.lock().expect("internal") {
                let me = tandem_proxy::resolve::Me {
                    app_id: rt.app_id().to_string(),
                    namespace: rt.options.namespace.clone().unwrap_or_default(),
                    address: addr,
                    http_port: rt.options.http_port(),
                };
                match r.register(&me) {
                    Ok(reg) => *self.registration.lock().expect("registration") = Some(reg),
                    Err(e) => needs_restart.push(format!("name resolution registration: {e}")),
                }
            }
            invoker.set_resolver(r);
        }
        if effects.delivery && rt.ready() && rt.app_health.is_healthy() {
            rt.stop_subscriptions();
            crate::delivery::start(rt);
        }
        Ok(Effects {
            needs_restart,
            ..effects
        })
    }

    /// What the watcher compares: every resource file's path and contents
    /// hash, and the config file's.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut files = Vec::new();
        if let ResourceSource::Dirs(dirs) = &self.source {
            for d in dirs {
                if let Ok(entries) = std::fs::read_dir(d) {
                    files.extend(entries.flatten().map(|e| e.path()));
                }
            }
        }
        files.sort();
        files.extend(self.config.iter().cloned());
        for f in files {
            f.hash(&mut h);
            if let Ok(bytes) = std::fs::read(&f) {
                bytes.hash(&mut h);
            }
        }
        h.finish()
    }

    /// Watches the files and reloads on a change that held still for 150
    /// ms, while the `HotReload` feature is on. Ends with the runtime.
    ///
    /// inotify wakes the watcher when something in a resources dir (or the
    /// config file) changes; a look every 5 s catches what inotify cannot
    /// see (network filesystems, a dir created after start). Where no
    /// inotify instance is left (`fs.inotify.max_user_instances`, 128 by
    /// default, is per user: a host running hundreds of sidecars reaches
    /// it), the files are polled every second instead. An idle sidecar
    /// thus wakes a few times a minute, not ten times a second.
    pub fn watch(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = me.fingerprint();
            let mut watch = FileWatch::new(me.watched());
            let every = if watch.is_some() {
                Duration::from_secs(5)
            } else {
                tracing::info!(
                    "no inotify instance available (fs.inotify.max_user_instances); \
                     resources are polled every second"
                );
                Duration::from_secs(1)
            };
            loop {
                match &mut watch {
                    Some(w) => {
                        tokio::select! {
                            () = w.changed() => {}
                            () = tokio::time::sleep(every) => {}
                        }
                        // A folder replaced (a ConfigMap's swap) or made
                        // after start gets its watch.
                        w.rewatch();
                    }
                    None => tokio::time::sleep(every).await,
                }
                let Some(rt) = me.rt.upgrade() else { return };
                if rt.is_shutting_down() {
                    return;
                }
                let now = me.fingerprint();
                if now == seen {
                    continue;
                }
                // Settle: editors write in steps.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let settled = me.fingerprint();
                if settled != now {
                    continue;
                }
                seen = settled;
                if !hot_reload_enabled(&rt.snapshot().configuration) {
                    tracing::info!("resources changed; HotReload is off, so nothing is applied");
                    continue;
                }
                drop(rt);
                me.reload("file change").await;
            }
        });
    }

    /// What the watcher looks at: each resources dir (any change in it),
    /// and the folders holding the resources dirs and the config file
    /// (changes to those names only: a folder removed and made again is
    /// seen at once).
    fn watched(&self) -> Watched {
        /// `path`'s folder, caring about `path`'s name only.
        fn name_in_parent(path: &std::path::Path) -> Option<(PathBuf, Option<OsString>)> {
            let name = path.file_name()?.to_os_string();
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            Some((dir, Some(name)))
        }
        let mut out = Watched::new();
        if let ResourceSource::Dirs(dirs) = &self.source {
            for d in dirs {
                out.extend(name_in_parent(d));
                out.push((d.clone(), None));
            }
        }
        out.extend(self.config.as_deref().and_then(name_in_parent));
        out
    }
}

type Watched = Vec<(PathBuf, Option<OsString>)>;
/// Watch descriptor → the names in its folder that matter (None: any).
/// One folder can be asked for twice (the config file beside the
/// resources dir: `~/.dapr/config.yaml` and `~/.dapr/components`), and
/// inotify gives both the same descriptor.
type Wds = Vec<(nix::sys::inotify::WatchDescriptor, Option<Vec<OsString>>)>;

/// inotify watches on folders (each may care about one file name only),
/// read by a small thread of its own that sleeps in `poll` (the crates
/// forbid `unsafe`, which registering the descriptor with tokio's reactor
/// needs) and wakes the watcher task when an event matters. The thread
/// ends within a minute of the task.
struct FileWatch {
    inotify: Arc<nix::sys::inotify::Inotify>,
    paths: Watched,
    wds: Arc<Mutex<Wds>>,
    events: tokio::sync::mpsc::Receiver<()>,
}

impl FileWatch {
    fn new(paths: Watched) -> Option<Self> {
        use nix::sys::inotify::{InitFlags, Inotify};
        let inotify = Arc::new(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?);
        let wds = Arc::new(Mutex::new(Wds::new()));
        let (tx, events) = tokio::sync::mpsc::channel(1);
        let (fd, known) = (inotify.clone(), wds.clone());
        std::thread::Builder::new()
            .name("tandem-inotify".into())
            .stack_size(64 << 10)
            .spawn(move || read_events(&fd, &known, &tx))
            .ok()?;
        let mut w = Self {
            inotify,
            paths,
            wds,
            events,
        };
        w.rewatch();
        Some(w)
    }

    /// (Re)adds a watch on every folder that exists now: the same folder
    /// keeps its descriptor; a replaced or new one gets one.
    fn rewatch(&mut self) {
        use nix::sys::inotify::AddWatchFlags as F;
        let mask = F::IN_CREATE
            | F::IN_DELETE
            | F::IN_MODIFY
            | F::IN_CLOSE_WRITE
            | F::IN_MOVED_FROM
            | F::IN_MOVED_TO
            | F::IN_ATTRIB
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR;
        let mut wds = self.wds.lock().expect("watch list");
        for (path, name) in &self.paths {
            let Ok(wd) = self.inotify.add_watch(path.as_path(), mask) else {
                continue;
            };
            match wds.iter_mut().find(|(w, _)| *w == wd) {
                None => wds.push((wd, name.clone().map(|n| vec![n]))),
                Some((_, names)) => match (names.as_mut(), name) {
                    (Some(names), Some(n)) if !names.contains(n) => names.push(n.clone()),
                    (Some(_), None) => *names = None,
                    _ => {}
                },
            }
        }
    }

    /// Resolves when an event that matters arrives (never, once the
    /// reading thread is gone: the 5 s look goes on).
    async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// The reading thread: waits for events (a minute at most, to notice that
/// the watcher task has ended) and passes on those that matter.
fn read_events(
    inotify: &nix::sys::inotify::Inotify,
    wds: &Mutex<Wds>,
    tx: &tokio::sync::mpsc::Sender<()>,
) {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::AsFd;
    loop {
        let ready = poll(
            &mut [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)],
            60_000u16,
        );
        if tx.is_closed() {
            return;
        }
        match ready {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let Ok(events) = inotify.read_events() else {
            continue;
        };
        let wds = wds.lock().expect("watch list");
        let matters = events
            .iter()
            .any(|e| match wds.iter().find(|(w, _)| *w == e.wd) {
                Some((_, Some(names))) => e.name.as_ref().is_some_and(|n| names.contains(n)),
                // A folder's own event, or one no longer watched.
                _ => true,
            });
        drop(wds);
        if matters {
            // Full: a wake-up is pending already.
            let _ = tx.try_send(());
        }
    }
}
