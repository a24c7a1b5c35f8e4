//! Virtual actors: the sidecar's actor runtime.
//!
//! A call for actor `type/id` goes to the host the placement table names
//! (`tandem_stateful::placement`: a ring per type over the live hosts in
//! the coordination engine); there the actor is activated when the host
//! takes its activation record, and calls run one at a time per actor id
//! (a fair queue; reentrant calls of the same chain pass). Actors idle
//! past `actorIdleTimeout` are deactivated (`DELETE /actors/{type}/{id}`
//! to the app) and their record released; so are those whose owner
//! changed when hosts come or go — only those, and only after their
//! calls in flight end. Timers live with the activation; reminders are
//! jobs of the scheduler (`api::jobs`), fired through this same path.

pub mod config;
pub mod reminders;
pub mod state;
pub mod stream;

use crate::error::ApiError;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use bytes::Bytes;
use config::ActorConfig;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tandem_proxy::invoke::{ProxyBody, full};
use tandem_proxy::telemetry::ActorEvent;
use tandem_stateful::placement::{Acquired, Host, Placement, Table};
use tandem_stateful::scheduler::now_ms;

/// How long a host's placement lease lasts; renewed every third of it.
/// A killed sidecar's actors move to another host within this time.
pub const LEASE: Duration = Duration::from_secs(6);
/// A host stops taking calls this long before its lease ends unless it
/// renewed (the margin covers a write in flight and a slow clock read).
const MARGIN_MS: i64 = 1_000;
/// Calls waiting for one actor's turn before more are refused.
const MAX_QUEUED: usize = 1_024;
/// How long an actor call may take without a `targets.actors` timeout
/// (then its turn is freed and the caller told).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub const REENTRANCY_HEADER: &str = "dapr-reentrancy-id";
pub const ERROR_HEADER: &str = "x-daprerrorresponseheader";
pub const CANCEL_HEADER: &str = "x-daprremindercancel";

/// One actor call, whatever door it came through.
#[derive(Clone, Debug)]
pub struct Call {
    pub actor_type: String,
    pub actor_id: String,
    /// What follows `/actors/{type}/{id}/` at the app: `method/{m}`,
    /// `method/timer/{name}`, `method/remind/{name}`.
    pub what: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The app's answer to an actor call.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    let grpc = match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Internal,
    };
    ApiError::new(status, grpc, code, message)
}

pub struct Activation {
    turn: Arc<tokio::sync::Mutex<()>>,
    queued: AtomicUsize,
    last_used: AtomicI64,
    /// The reentrancy id of the call chain holding the turn, and how deep.
    chain: Mutex<Option<(String, u32)>>,
    timers: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Deactivated: calls that find it go round again (it stays in the
    /// map, so nothing new is made for its id, until its record is let go).
    gone: AtomicBool,
    /// A deactivation is under way (one at a time).
    leaving: AtomicBool,
}

impl Activation {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            queued: AtomicUsize::new(0),
            last_used: AtomicI64::new(now_ms()),
            chain: Mutex::new(None),
            timers: Mutex::new(HashMap::new()),
            gone: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
        })
    }
}

type Key = (String, String);

/// An actor type the sidecar runs itself (the workflow engine's), not
/// the app: its calls — and deactivations (`DELETE`) and reminder ticks —
/// go to this handler on the host that holds the actor, with the same
/// placement, one-call-at-a-time turns and reminders as the app's actors.
pub trait Internal: Send + Sync {
    fn call<'a>(
        &'a self,
        call: &'a Call,
    ) -> futures_util::future::BoxFuture<'a, Result<Answer, ApiError>>;
}

pub struct Actors {
    rt: Weak<Runtime>,
    /// Itself, for the tasks a call hands its turn to.
    this: Weak<Actors>,
    /// This host; its `types` are left empty here — each heartbeat sends
    /// the config's `entities` as they stand.
    pub me: Host,
    namespace: String,
    /// The app's actor configuration: from `/dapr/config`, or from the
    /// registration of an app that hosts its actors over a stream.
    config: ArcSwap<ActorConfig>,
    /// Apps' actor-host streams (`SubscribeActorEventsAlpha1`), newest
    /// last; when the config came from one, calls go to the newest.
    streams: Mutex<Vec<Arc<stream::StreamHost>>>,
    via_stream: AtomicBool,
    placement: Arc<dyn Placement>,
    table: ArcSwap<Table>,
    active: Mutex<HashMap<Key, Arc<Activation>>>,
    /// This host may run actors until then (Unix ms, its own clock).
    lease_valid_until: AtomicI64,
    /// Moves on each time every local actor is dropped at once (a lapsed
    /// lease): an activation taken before that is not used after it.
    epoch: AtomicU64,
    /// One heartbeat at a time: a slower one finishing last must not
    /// leave an older lease end than the engine holds.
    beating: tokio::sync::Mutex<()>,
    /// A sweep of gone hosts is under way (one at a time, off the beat).
    sweeping: AtomicBool,
    /// Actor types the sidecar runs itself (workflows), by type.
    internal: ArcSwap<HashMap<String, Arc<dyn Internal>>>,
}

/// Counts a call waiting for a turn (and in the pending-calls gauge);
/// uncounted when dropped.
struct Queued<'a> {
    n: &'a AtomicUsize,
    gauge: Option<(Arc<Runtime>, &'a str)>,
}

impl<'a> Queued<'a> {
    fn new(n: &'a AtomicUsize, rt: Option<Arc<Runtime>>, actor_type: &'a str) -> Self {
        if let Some(rt) = &rt {
            rt.metrics.actor_pending(actor_type, 1);
        }
        Self {
            n,
            gauge: rt.map(|rt| (rt, actor_type)),
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.n.fetch_sub(1, Ordering::AcqRel);
        if let Some((rt, t)) = &self.gauge {
            rt.metrics.actor_pending(t, -1);
        }
    }
}

/// The app's path for a call: `/actors/{type}/{id}[/{what}]`.
fn app_path(call: &Call) -> String {
    let base = format!(
        "/actors/{}/{}",
        segment(&call.actor_type),
        segment(&call.actor_id)
    );
    if call.what.is_empty() {
        base
    } else {
        format!("{base}/{}", call.what)
    }
}

/// The name of an actor call's span: `CallActor/{type}/{method}` (a
/// reminder's or timer's method is `remind/{name}`, `timer/{name}`).
fn span_name(call: &Call) -> String {
    let what = call.what.split('?').next().unwrap_or_default();
    let method =
        what.strip_prefix("method/")
            .unwrap_or(if what.is_empty() { "deactivate" } else { what });
    format!("CallActor/{}/{}", call.actor_type, method)
}

/// Opens a CLIENT span for an actor call (when tracing is on), under the
/// caller's `traceparent`, and puts its context in `headers` for the
/// next hop.
fn open_span(
    rt: &Runtime,
    call: &Call,
    headers: &mut HeaderMap,
    to: &str,
) -> Option<(Arc<tandem_proxy::trace::Tracer>, tandem_proxy::trace::Span)> {
    let tracer = rt.tracer();
    if !tracer.is_on() {
        return None;
    }
    let parent = tandem_proxy::trace::Context::from_headers(&call.headers);
    let mut span = tracer.start(
        || span_name(call),
        tandem_proxy::trace::Kind::Client,
        parent,
    );
    span.attribute("dapr.actor.type", &call.actor_type);
    span.attribute("dapr.actor.id", &call.actor_id);
    span.attribute("server.address", to);
    span.inject(headers);
    Some((tracer, span))
}

/// Sends a request and reads its whole answer inside `span` (ended with
/// the outcome: a 200 is success).
async fn traced<E: std::fmt::Display>(
    span: Option<(Arc<tandem_proxy::trace::Tracer>, tandem_proxy::trace::Span)>,
    failed: impl Fn(String) -> ApiError,
    send: impl std::future::Future<Output = Result<Response<ProxyBody>, E>>,
) -> Result<(http::response::Parts, Bytes), ApiError> {
    let answered = async {
        let (parts, body) = send.await.map_err(|e| failed(e.to_string()))?.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((parts, body))
    }
    .await;
    if let Some((tracer, span)) = span {
        tracer.end(
            span,
            matches!(&answered, Ok((p, _)) if p.status == StatusCode::OK),
        );
    }
    answered
}

/// Percent-escapes one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks an actor type and id as the API takes them.
pub fn check_names(actor_type: &str, actor_id: &str) -> Result<(), ApiError> {
    if actor_type.trim().is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            "the actor type is empty",
        ));
    }
    if actor_id.trim().is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            "the actor id is empty",
        ));
    }
    for (what, v) in [("type", actor_type), ("id", actor_id)] {
        if v.contains("||") || v.chars().any(char::is_control) || v.len() > 1024 {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                format!(
                    "the actor {what} `{}` is not allowed: no `||`, no control characters, at most 1024 bytes",
                    v.escape_debug()
                ),
            ));
        }
    }
    Ok(())
}

impl Actors {
    /// Starts the actor runtime: registers this host (with the types its
    /// app hosts) and keeps its lease, the table and idle actors in hand.
    pub fn start(
        rt: &Arc<Runtime>,
        config: ActorConfig,
        address: String,
        placement: Arc<dyn Placement>,
    ) -> Arc<Self> {
        let namespace = rt
            .options
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let me = Host {
            id: format!("{}-{}-{:x}", rt.app_id(), std::process::id(), now_ms()),
            app_id: rt.app_id().to_string(),
            address,
            // Each heartbeat sends the config's `entities` as they stand.
            types: Vec::new(),
        };
        let actors = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            rt: Arc::downgrade(rt),
            me,
            namespace,
            config: ArcSwap::from_pointee(config),
            streams: Mutex::new(Vec::new()),
            via_stream: AtomicBool::new(false),
            placement,
            table: ArcSwap::from_pointee(Table::default()),
            active: Mutex::new(HashMap::new()),
            lease_valid_until: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            beating: tokio::sync::Mutex::new(()),
            sweeping: AtomicBool::new(false),
            internal: ArcSwap::from_pointee(HashMap::new()),
        });
        tokio::spawn(keep_lease(Arc::downgrade(&actors), rt.shutdown_signal()));
        tokio::spawn(scan_idle(Arc::downgrade(&actors)));
        tokio::spawn(watch_lease(Arc::downgrade(&actors)));
        actors
    }

    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.rt.upgrade()
    }

    pub fn placement_name(&self) -> &str {
        self.placement.what()
    }

    fn count(&self, event: ActorEvent, actor_type: &str) {
        if let Some(rt) = self.rt.upgrade() {
            rt.metrics.actor(event, actor_type);
        }
    }

    /// The activation of `key`, made (and counted) if there is none;
    /// `None` while a deactivated one is still being let go, or when every
    /// local actor was dropped since `epoch` was read (the record taken
    /// then may be another host's by now).
    fn activation(&self, key: &Key, epoch: u64) -> Option<Arc<Activation>> {
        let mut active = self.active.lock().expect("actors lock");
        if self.epoch.load(Ordering::Acquire) != epoch {
            return None;
        }
        if let Some(a) = active.get(key) {
            return (!a.gone.load(Ordering::Acquire)).then(|| a.clone());
        }
        let a = Activation::new();
        active.insert(key.clone(), a.clone());
        drop(active);
        self.count(ActorEvent::Activated, &key.0);
        Some(a)
    }

    /// The app's actor configuration as it stands.
    pub fn config(&self) -> Arc<ActorConfig> {
        self.config.load_full()
    }

    fn type_config(&self, actor_type: &str) -> config::TypeConfig {
        self.config.load().of(actor_type).clone()
    }

    /// Active actors by type, for the metadata API.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut by: HashMap<String, usize> = self
            .config
            .load()
            .entities
            .iter()
            .map(|t| (t.clone(), 0))
            .collect();
        for (t, _) in self.active.lock().expect("actors lock").keys() {
            *by.entry(t.clone()).or_default() += 1;
        }
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort();
        v
    }

    /// Whether this host has a lease and a table.
    pub fn ready(&self) -> bool {
        self.lease_valid_until.load(Ordering::Acquire) > now_ms()
    }

    pub fn hosts(&self, actor_type: &str) -> bool {
        self.config.load().entities.iter().any(|t| t == actor_type)
            || self.internal.load().contains_key(actor_type)
    }

    /// Hosts actor types run by the sidecar itself: registered by a
    /// heartbeat sent now (answered when it is done).
    pub async fn host_internal(self: &Arc<Self>, types: &[&str], handler: Arc<dyn Internal>) {
        let mut m = HashMap::clone(&self.internal.load());
        for t in types {
            m.insert(t.to_string(), handler.clone());
        }
        self.internal.store(Arc::new(m));
        // In the table before the first call for them.
        self.beat().await;
    }

    /// The types this host registers: the app's and its own.
    fn all_types(&self) -> Vec<String> {
        let mut types = self.config.load().entities.clone();
        types.extend(self.internal.load().keys().cloned());
        types
    }

    /// One heartbeat: renews the lease, takes the new table, and lets go
    /// of actors whose owner is now another host.
    async fn beat(self: &Arc<Self>) {
        let _one = self.beating.lock().await;
        let start = now_ms();
        let me = Host {
            types: self.all_types(),
            ..self.me.clone()
        };
        match self
            .placement
            .heartbeat(&self.namespace, &me, start, LEASE.as_millis() as i64)
            .await
        {
            Ok(hosts) => {
                // Renewed too late (the engine answered after this host's
                // own lease had lapsed): other hosts may have taken its
                // actors meanwhile, so it keeps none of them.
                if now_ms() >= self.lease_valid_until.load(Ordering::Acquire) {
                    self.stop_all_local("the placement lease lapsed before it was renewed");
                }
                self.lease_valid_until.store(
                    start + LEASE.as_millis() as i64 - MARGIN_MS,
                    Ordering::Release,
                );
                let table = Table::new(hosts);
                let moved: Vec<Key> = self
                    .active
                    .lock()
                    .expect("actors lock")
                    .iter()
                    .filter(|(_, a)| !a.leaving.load(Ordering::Acquire))
                    .map(|(k, _)| k)
                    .filter(|(t, id)| table.owner(t, id).is_none_or(|h| h.id != self.me.id))
                    .cloned()
                    .collect();
                self.table.store(Arc::new(table));
                if !self.sweeping.swap(true, Ordering::AcqRel) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me
                            .placement
                            .sweep(&me.namespace, now_ms(), LEASE.as_millis() as i64)
                            .await
                        {
                            tracing::debug!(error = %e, "actors: forgetting gone hosts failed (tried again next heartbeat)");
                        }
                        me.sweeping.store(false, Ordering::Release);
                    });
                }
                for key in moved {
                    self.count(ActorEvent::Rebalanced, &key.0);
                    let me = self.clone();
                    tokio::spawn(async move { me.deactivate(&key).await });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "actors: placement heartbeat failed");
                if now_ms() >= self.lease_valid_until.load(Ordering::Acquire) {
                    // Another host may take these actors now: stop them.
                    self.stop_all_local("the placement lease lapsed");
                }
            }
        }
    }

    /// Stops every local actor at once (the lease lapsed: their records
    /// may be another host's already). Each is marked gone and its timers
    /// end now; it stays in the map — so nothing new is made for its id —
    /// until the call it may be running ends, then its record is given
    /// back (a no-op if another host took it) and it is forgotten.
    fn stop_all_local(self: &Arc<Self>, why: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let all: Vec<(Key, Arc<Activation>)> = self
            .active
            .lock()
            .expect("actors lock")
            .iter()
            .filter(|(_, a)| !a.gone.load(Ordering::Acquire))
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        if !all.is_empty() {
            tracing::warn!(
                count = all.len(),
                "actors: {why}; the actors on this host were stopped"
            );
        }
        for (key, a) in all {
            a.gone.store(true, Ordering::Release);
            for (_, t) in a.timers.lock().expect("timers lock").drain() {
                t.abort();
            }
            let me = self.clone();
            tokio::spawn(async move {
                let _turn = a.turn.lock().await;
                me.let_go(&key, &a).await;
            });
        }
    }

    /// Calls an actor wherever it lives. `hops`: how many sidecars sent
    /// it on before this one (0 from an API door). A call goes to the
    /// ring's owner (hop 1), and from there to the record's holder when
    /// another host still holds it (hop 2); a sidecar that gets a call for
    /// an actor it neither runs nor owns answers MOVED, and the sender
    /// looks again (a table one heartbeat old, an actor just let go).
    ///
    /// From an API door (`hops` 0) the call runs under the actor type's
    /// retry and circuit breaker (`targets.actors`, or the default
    /// policies): a failed call is tried again as the retry says, and an
    /// open breaker refuses calls at once.
    pub async fn call(self: &Arc<Self>, call: Call, hops: u8) -> Result<Answer, ApiError> {
        use tandem_proxy::resilience::{FailureKind, ResilienceError};
        check_names(&call.actor_type, &call.actor_id)?;
        let policy = (hops == 0)
            .then(|| self.rt.upgrade())
            .flatten()
            .map(|rt| rt.snapshot().actor_policy(&call.actor_type, &call.actor_id))
            .filter(|p| !p.is_empty());
        let Some(policy) = policy else {
            return self.call_here(call, hops).await;
        };
        let classify = |e: &ApiError| {
            let final_answer = e.http.is_client_error() && e.http != StatusCode::TOO_MANY_REQUESTS
                || e.message.contains("actor method not found")
                || e.message.contains("maximum stack depth exceeded")
                || e.message.contains("did not find address");
            if final_answer {
                FailureKind::Permanent
            } else {
                FailureKind::Transient
            }
        };
        match policy
            .run(|| self.call_here(call.clone(), 0), classify)
            .await
        {
            Ok(a) => Ok(a),
            Err(ResilienceError::Inner(e)) => Err(e),
            Err(ResilienceError::BreakerOpen) => Err(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                format!(
                    "error invoke actor method: the circuit breaker for actor {}/{} is open (targets.actors resiliency); calls are refused until it closes",
                    call.actor_type, call.actor_id
                ),
            )),
            Err(ResilienceError::Timeout(t)) => Err(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                format!("error invoke actor method: no answer within {t:?}"),
            )),
        }
    }

    /// One try of a call: to the host that runs the actor (or here).
    async fn call_here(self: &Arc<Self>, call: Call, hops: u8) -> Result<Answer, ApiError> {
        let key: Key = (call.actor_type.clone(), call.actor_id.clone());
        let drain = self.type_config(&call.actor_type).drain_timeout;
        let deadline = tokio::time::Instant::now() + drain.max(LEASE);
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_INVOKE_METHOD",
                    format!(
                        "actor {}/{} could not be activated: its previous host did not let it go within {:?}",
                        call.actor_type,
                        call.actor_id,
                        drain.max(LEASE)
                    ),
                ));
            }
            let found = self.active.lock().expect("actors lock").get(&key).cloned();
            if let Some(act) = found {
                if act.gone.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                if !self.ready() {
                    // Its record may be another host's soon: run nothing.
                    return Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR_ACTOR_INVOKE_METHOD",
                        "this sidecar's placement lease is about to lapse (the engine is not answering); it is renewing it",
                    ));
                }
                match self.run(&act, &call).await? {
                    Some(answer) => return Ok(answer),
                    None => continue,
                }
            }
            if !self.ready() && self.table.load().hosts().is_empty() {
                // First heartbeat not done yet (the sidecar just started).
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let table = self.table.load_full();
            let Some(owner) = table.owner(&call.actor_type, &call.actor_id).cloned() else {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_INVOKE_METHOD",
                    format!(
                        "error invoke actor method: did not find address for actor {}/{}: no host of actor type {} is registered",
                        call.actor_type, call.actor_id, call.actor_type
                    ),
                ));
            };
            // Hop 2 is a call for the holder of the actor's record (sent by
            // its owner): it runs here if the record is still this host's,
            // wherever the ring puts it (an activation whose calls ended
            // may have left it so); the next heartbeat lets it go.
            if owner.id != self.me.id && hops < HOLDER_HOP {
                if hops > 0 {
                    return Err(moved());
                }
                match self.forward(&owner, call.clone(), 1).await {
                    Err(e) if e.error_code == MOVED => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    other => return other,
                }
            }
            if !self.hosts(&call.actor_type) {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_INVOKE_METHOD",
                    format!(
                        "actor type {} is not hosted by app {}",
                        call.actor_type, self.me.app_id
                    ),
                ));
            }
            if !self.ready() {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_INVOKE_METHOD",
                    "this sidecar's placement lease has lapsed; it is renewing it",
                ));
            }
            let epoch = self.epoch.load(Ordering::Acquire);
            match self
                .placement
                .acquire(
                    &self.namespace,
                    &call.actor_type,
                    &call.actor_id,
                    &self.me.id,
                    now_ms(),
                )
                .await
            {
                Ok(Acquired::Mine) => {
                    // Made unless every actor here was dropped meanwhile
                    // (then the loop finds the lease lapsed).
                    self.activation(&key, epoch);
                }
                Ok(Acquired::Held(_)) if hops >= HOLDER_HOP => return Err(moved()),
                Ok(Acquired::Held(holder)) => {
                    // Its old host still runs it (until it drains it).
                    match self.forward(&holder, call.clone(), HOLDER_HOP).await {
                        Err(e) if e.error_code == MOVED => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        other => return other,
                    }
                }
                Err(e) => {
                    self.count(ActorEvent::ActivationFailed, &call.actor_type);
                    return Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR_ACTOR_INVOKE_METHOD",
                        format!("actor placement ({}) failed: {e}", self.placement.what()),
                    ));
                }
            }
        }
    }

    /// Runs a call on a local activation in its turn; `None` when the
    /// activation went away meanwhile (the caller goes round again).
    async fn run(&self, act: &Arc<Activation>, call: &Call) -> Result<Option<Answer>, ApiError> {
        let reentrancy = &self.type_config(&call.actor_type).reentrancy;
        let given = call
            .headers
            .get(REENTRANCY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if act.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            act.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(err(
                StatusCode::TOO_MANY_REQUESTS,
                "ERR_ACTOR_INVOKE_METHOD",
                format!(
                    "actor {}/{} has {MAX_QUEUED} calls waiting; try again later",
                    call.actor_type, call.actor_id
                ),
            ));
        }
        let _queued = Queued::new(&act.queued, self.rt.upgrade(), &call.actor_type);
        // A call of the chain that holds the turn enters without waiting.
        if reentrancy.enabled
            && let Some(id) = &given
        {
            let entered = {
                let mut chain = act.chain.lock().expect("chain lock");
                match chain.as_mut() {
                    Some((holder, depth)) if holder == id => {
                        if *depth >= reentrancy.max_depth {
                            Err(())
                        } else {
                            *depth += 1;
                            Ok(true)
                        }
                    }
                    _ => Ok(false),
                }
            };
            match entered {
                Err(()) => {
                    return Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR_ACTOR_INVOKE_METHOD",
                        format!(
                            "maximum stack depth exceeded: actor {}/{} was reentered more than {} times",
                            call.actor_type, call.actor_id, reentrancy.max_depth
                        ),
                    ));
                }
                Ok(true) => {
                    // The depth comes back down however this call ends,
                    // and only for its own chain.
                    let _depth = Reentered { act, chain: id };
                    if !self.ready() {
                        return Err(lapsed());
                    }
                    let timeout = self.call_timeout(&call.actor_type);
                    let out = match tokio::time::timeout(timeout, self.to_app(call, Some(id))).await
                    {
                        Ok(out) => out,
                        Err(_) => Err(timed_out(call, timeout)),
                    };
                    act.last_used.store(now_ms(), Ordering::Release);
                    return out.map(Some);
                }
                Ok(false) => {}
            }
        }
        let turn = act.turn.clone().lock_owned().await;
        if act.gone.load(Ordering::Acquire) {
            return Ok(None);
        }
        // Waited behind a long call: the lease may have lapsed meanwhile.
        if !self.ready() {
            return Err(lapsed());
        }
        let chain_id = reentrancy
            .enabled
            .then(|| given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
        *act.chain.lock().expect("chain lock") = chain_id.clone().map(|id| (id, 1));
        // The app's call owns the turn: a caller that goes away does not
        // free the actor while the app may still be running the call; the
        // turn is free when the app answers or the call's timeout ends it.
        let Some(me) = self.this.upgrade() else {
            return Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_ACTOR_RUNTIME_CLOSED",
                "the actor runtime is stopping",
            ));
        };
        let (call, act) = (call.clone(), act.clone());
        let timeout = self.call_timeout(&call.actor_type);
        let task = tokio::spawn(async move {
            let out =
                match tokio::time::timeout(timeout, me.to_app(&call, chain_id.as_deref())).await {
                    Ok(out) => out,
                    Err(_) => Err(timed_out(&call, timeout)),
                };
            *act.chain.lock().expect("chain lock") = None;
            act.last_used.store(now_ms(), Ordering::Release);
            drop(turn);
            out
        });
        match task.await {
            Ok(out) => out.map(Some),
            Err(e) => Err(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                format!("error invoke actor method: {e}"),
            )),
        }
    }

    /// How long a call to an actor of `actor_type` may take.
    fn call_timeout(&self, actor_type: &str) -> Duration {
        self.rt
            .upgrade()
            .and_then(|rt| rt.snapshot().actor_timeout(actor_type))
            .unwrap_or(DEFAULT_CALL_TIMEOUT)
    }

    async fn to_app(&self, call: &Call, chain: Option<&str>) -> Result<Answer, ApiError> {
        let internal = self.internal.load().get(&call.actor_type).cloned();
        if let Some(handler) = internal {
            return handler.call(call).await;
        }
        if self.via_stream.load(Ordering::Acquire) {
            let host = self.streams.lock().expect("streams lock").last().cloned();
            let Some(host) = host else {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_INVOKE_METHOD",
                    "error invoke actor method: the app's actor host stream is closed",
                ));
            };
            return host.call(call, chain).await;
        }
        let Some(rt) = self.rt.upgrade() else {
            return Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_ACTOR_RUNTIME_CLOSED",
                "the sidecar is stopping",
            ));
        };
        let Some(app) = rt.app.clone() else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_ACTOR_NO_APP_CHANNEL",
                "app channel is not initialized",
            ));
        };
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(app_path(call))
            .body(full(call.body.clone()))
            .expect("valid request parts");
        let h = req.headers_mut();
        for (k, v) in &call.headers {
            h.append(k, v.clone());
        }
        tandem_proxy::invoke::strip_internal(h);
        h.remove(REENTRANCY_HEADER);
        if let Some(id) = chain
            && let Ok(v) = HeaderValue::from_str(id)
        {
            h.insert(REENTRANCY_HEADER, v);
        }
        if !h.contains_key(http::header::CONTENT_TYPE) && !call.body.is_empty() {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let failed = |e: String| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                format!("error invoke actor method: {e}"),
            )
        };
        let span = open_span(&rt, call, req.headers_mut(), "app");
        let (parts, body) = traced(span, failed, app.invoke(req)).await?;
        if parts.status == StatusCode::NOT_FOUND && call.method != Method::DELETE {
            return Err(failed(format!(
                "actor method not found: actors/{}/{}/{} (the app answered 404: {})",
                call.actor_type,
                call.actor_id,
                call.what,
                String::from_utf8_lossy(&body)
            )));
        }
        if parts.status != StatusCode::OK && call.method != Method::DELETE {
            return Err(failed(format!(
                "error from actor service: ({}) {}",
                parts.status.as_u16(),
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends the call to the sidecar that hosts (or owns) the actor.
    async fn forward(&self, to: &Host, call: Call, hops: u8) -> Result<Answer, ApiError> {
        let failed = |e: String| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_INVOKE_METHOD",
                format!(
                    "error invoke actor method: the host of actor {}/{} ({}) failed: {e}",
                    call.actor_type, call.actor_id, to.address
                ),
            )
        };
        let Some(rt) = self.rt.upgrade() else {
            return Err(failed("the sidecar is stopping".into()));
        };
        let Some(invoker) = rt.invoker().cloned() else {
            return Err(failed("service invocation is not up yet".into()));
        };
        let address: std::net::SocketAddr = to
            .address
            .parse()
            .map_err(|e| failed(format!("bad host address: {e}")))?;
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(app_path(&call))
            .body(full(call.body.clone()))
            .expect("valid request parts");
        *req.headers_mut() = call.headers.clone();
        tandem_proxy::invoke::strip_internal(req.headers_mut());
        req.headers_mut().insert(
            tandem_proxy::invoke::ACTOR,
            HeaderValue::from(u16::from(hops)),
        );
        let span = open_span(&rt, &call, req.headers_mut(), &to.address);
        let (parts, body) =
            traced(span, failed, invoker.to_address(&to.app_id, address, req)).await?;
        if let Some(code) = parts.headers.get(ACTOR_ERROR) {
            // The host's own error (not the app's answer): as it said.
            let code = code
                .to_str()
                .unwrap_or("ERR_ACTOR_INVOKE_METHOD")
                .to_string();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ApiError::new(
                parts.status,
                tonic::Code::Internal,
                static_code(&code),
                message,
            ));
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Deactivates a local actor: after its call in flight (up to the drain
    /// time), tells the app, then gives its record up.
    pub async fn deactivate(&self, key: &Key) {
        let Some(act) = self.active.lock().expect("actors lock").get(key).cloned() else {
            return;
        };
        // One deactivation at a time (heartbeats and idle scans both ask).
        if act.leaving.swap(true, Ordering::AcqRel) {
            return;
        }
        // The record is released only once no call runs: waiting past the
        // drain time is logged, never cut short (another host would run
        // the actor beside the call still in flight here).
        let drain = self.type_config(&key.0).drain_timeout;
        let turn = match tokio::time::timeout(drain, act.turn.lock()).await {
            Ok(t) => t,
            Err(_) => {
                tracing::warn!(actor_type = %key.0, actor_id = %key.1, ?drain, "actors: a call is still running past the drain time; waiting for it before letting the actor go");
                act.turn.lock().await
            }
        };
        if act.gone.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, t) in act.timers.lock().expect("timers lock").drain() {
            t.abort();
        }
        let call = Call {
            actor_type: key.0.clone(),
            actor_id: key.1.clone(),
            what: String::new(),
            method: Method::DELETE,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        match tokio::time::timeout(drain, self.to_app(&call, None)).await {
            Ok(Ok(_)) => self.count(ActorEvent::Deactivated, &key.0),
            Ok(Err(e)) => {
                self.count(ActorEvent::DeactivationFailed, &key.0);
                tracing::debug!(actor_type = %key.0, actor_id = %key.1, error = %e.message, "actors: the app's deactivation answer");
            }
            Err(_) => {
                self.count(ActorEvent::DeactivationFailed, &key.0);
                tracing::debug!(actor_type = %key.0, actor_id = %key.1, "actors: the app did not answer the deactivation in time");
            }
        }
        self.let_go(key, &act).await;
        drop(turn);
    }

    /// The end of a gone activation, its turn held by the caller: its
    /// record given back (a no-op if another host took it), then it leaves
    /// the map — only now may a new one be made for its id.
    async fn let_go(&self, key: &Key, act: &Arc<Activation>) {
        if let Err(e) = self
            .placement
            .release(&self.namespace, &key.0, &key.1, &self.me.id)
            .await
        {
            // The record lapses with this host's lease if it is never
            // released; another host waits for that.
            tracing::warn!(actor_type = %key.0, actor_id = %key.1, error = %e, "actors: releasing an activation failed");
        }
        let mut active = self.active.lock().expect("actors lock");
        if active.get(key).is_some_and(|a| Arc::ptr_eq(a, act)) {
            active.remove(key);
        }
    }

    /// Gives every actor up (shutdown): drained, the app told, records
    /// released, then this host's lease.
    pub async fn stop(&self) {
        let keys: Vec<Key> = self
            .active
            .lock()
            .expect("actors lock")
            .keys()
            .cloned()
            .collect();
        futures_util::future::join_all(keys.iter().map(|k| self.deactivate(k))).await;
        let _ = self.placement.leave(&self.namespace, &self.me.id).await;
    }

    /// Starts (or replaces) a timer on a local actor, activating it.
    pub async fn register_timer(
        self: &Arc<Self>,
        actor_type: &str,
        actor_id: &str,
        name: &str,
        timer: Timer,
    ) -> Result<(), ApiError> {
        check_names(actor_type, actor_id)?;
        let key: Key = (actor_type.to_string(), actor_id.to_string());
        let act = self.local_activation(&key).await?;
        let mine = Arc::downgrade(&act);
        let me = Arc::downgrade(self);
        let (t, id, n) = (
            actor_type.to_string(),
            actor_id.to_string(),
            name.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut fired: u32 = 0;
            tokio::time::sleep(Duration::from_millis(timer.due_ms)).await;
            loop {
                if timer.expires.is_some_and(|e| now_ms() > e) {
                    break;
                }
                let Some(me) = me.upgrade() else { break };
                let body = serde_json::json!({
                    "callback": timer.callback,
                    "data": timer.data,
                    "dueTime": timer.due_text,
                    "period": timer.period_text,
                });
                let call = Call {
                    actor_type: t.clone(),
                    actor_id: id.clone(),
                    what: format!("method/timer/{}", segment(&n)),
                    method: Method::PUT,
                    headers: HeaderMap::new(),
                    body: Bytes::from(body.to_string()),
                };
                // Only on the activation it was set on: it ends with it.
                let Some(act) = mine.upgrade() else { break };
                if act.gone.load(Ordering::Acquire) {
                    break;
                }
                match me.run(&act, &call).await {
                    Ok(Some(a)) if a.headers.contains_key(CANCEL_HEADER) => break,
                    Ok(None) => break,
                    Ok(Some(_)) => me.count(ActorEvent::TimerFired, &t),
                    Err(e) => {
                        tracing::warn!(actor_type = %t, actor_id = %id, timer = %n, error = %e.message, "actors: a timer's call failed");
                    }
                }
                drop(me);
                fired += 1;
                match (timer.period_ms, timer.repeats) {
                    (Some(p), r) if r.is_none_or(|r| fired < r) => {
                        tokio::time::sleep(Duration::from_millis(p.max(1))).await;
                    }
                    _ => break,
                }
            }
        });
        if let Some(old) = act
            .timers
            .lock()
            .expect("timers lock")
            .insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }

    pub async fn unregister_timer(&self, actor_type: &str, actor_id: &str, name: &str) {
        let key: Key = (actor_type.to_string(), actor_id.to_string());
        if let Some(act) = self.active.lock().expect("actors lock").get(&key)
            && let Some(t) = act.timers.lock().expect("timers lock").remove(name)
        {
            t.abort();
        }
    }

    /// The actor's local activation, made when this host may take it (a
    /// timer lives where its actor runs).
    async fn local_activation(&self, key: &Key) -> Result<Arc<Activation>, ApiError> {
        // One being let go is waited for (up to its drain time): a timer
        // put on it would be lost with it.
        let deadline = tokio::time::Instant::now() + self.type_config(&key.0).drain_timeout;
        loop {
            let found = self.active.lock().expect("actors lock").get(key).cloned();
            match found {
                Some(a) if !a.gone.load(Ordering::Acquire) => return Ok(a),
                Some(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Some(_) => {
                    return Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR_ACTOR_TIMER_CREATE",
                        format!("actor {}/{} is being deactivated; try again", key.0, key.1),
                    ));
                }
                None => break,
            }
        }
        if !self.ready() {
            return Err(lapsed());
        }
        if !self.hosts(&key.0) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_ACTOR_INSTANCE_MISSING",
                format!(
                    "actor instance is missing: actor type {} is not hosted here",
                    key.0
                ),
            ));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        match self
            .placement
            .acquire(&self.namespace, &key.0, &key.1, &self.me.id, now_ms())
            .await
        {
            Ok(Acquired::Mine) => self.activation(key, epoch).ok_or_else(lapsed),
            Ok(Acquired::Held(h)) => Err(err(
                StatusCode::BAD_REQUEST,
                "ERR_ACTOR_INSTANCE_MISSING",
                format!(
                    "actor instance is missing: actor {}/{} runs on another host ({})",
                    key.0, key.1, h.address
                ),
            )),
            Err(e) => {
                self.count(ActorEvent::ActivationFailed, &key.0);
                Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_ACTOR_TIMER_CREATE",
                    format!("actor placement ({}) failed: {e}", self.placement.what()),
                ))
            }
        }
    }
}

/// On a peer's answer: the actor runtime's own error code (the answer is
/// its error, not the app's).
pub const ACTOR_ERROR: &str = "tandem-actor-error";

fn lapsed() -> ApiError {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ERR_ACTOR_INVOKE_METHOD",
        "this sidecar's placement lease is not live (the engine has not answered in time); it is renewing it",
    )
}

fn timed_out(call: &Call, timeout: Duration) -> ApiError {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ERR_ACTOR_INVOKE_METHOD",
        format!(
            "error invoke actor method: actor {}/{} did not answer within {timeout:?} (a targets.actors timeout, or the default)",
            call.actor_type, call.actor_id
        ),
    )
}

/// A reentrant call's place in its chain's depth, given back when the
/// call ends however it ends — to its own chain only.
struct Reentered<'a> {
    act: &'a Activation,
    chain: &'a str,
}

impl Drop for Reentered<'_> {
    fn drop(&mut self) {
        if let Some((id, d)) = self.act.chain.lock().expect("chain lock").as_mut()
            && id == self.chain
        {
            *d = d.saturating_sub(1);
        }
    }
}

/// The hop count of a call sent to the host that holds an actor's record.
const HOLDER_HOP: u8 = 2;

/// A peer's answer for an actor it neither runs nor owns: look again.
const MOVED: &str = "ERR_ACTOR_MOVED";

fn moved() -> ApiError {
    err(
        StatusCode::CONFLICT,
        MOVED,
        "the actor is not on this host; ask again",
    )
}

fn static_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        MOVED,
        "ERR_ACTOR_INVOKE_METHOD",
        "ERR_ACTOR_INSTANCE_MISSING",
        "ERR_ACTOR_RUNTIME_CLOSED",
        "ERR_ACTOR_NO_APP_CHANNEL",
        "ERR_MALFORMED_REQUEST",
        "ERR_ACTOR_RUNTIME_NOT_FOUND",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("ERR_ACTOR_INVOKE_METHOD")
}

/// A timer's plan, checked.
#[derive(Clone, Debug)]
pub struct Timer {
    pub due_ms: u64,
    pub due_text: String,
    pub period_ms: Option<u64>,
    pub period_text: String,
    pub repeats: Option<u32>,
    pub expires: Option<i64>,
    pub callback: String,
    pub data: serde_json::Value,
}

/// A `period`: a duration, or ISO 8601 `R<n>/<duration>` (n repetitions).
pub fn period(text: &str) -> Result<(u64, Option<u32>), String> {
    let t = text.trim();
    let (repeats, rest) = match t.strip_prefix('R').and_then(|r| r.split_once('/')) {
        Some((n, rest)) => {
            let n: u32 = n
                .parse()
                .map_err(|_| format!("period `{t}`: `R{n}` is not a repetition count"))?;
            (Some(n), rest)
        }
        None => (None, t),
    };
    let d = config::duration(rest).map_err(|e| format!("period {e}"))?;
    Ok((d.as_millis() as u64, repeats))
}

/// A `dueTime`: a duration from now, ISO 8601, or an RFC 3339 instant.
pub fn due_ms(text: &str, now: i64) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    if let Ok(d) = config::duration(t) {
        return Ok(d.as_millis() as u64);
    }
    tandem_stateful::times::instant(t, now, "dueTime")
        .map(|at| u64::try_from(at - now).unwrap_or(0))
}

/// The embedded placement table: the host's SQLite file, the one the
/// embedded job engine uses.
pub fn embedded_placement() -> Result<(Arc<dyn Placement>, std::path::PathBuf), String> {
    let path = crate::home::dir().join("jobs.db");
    let p = tandem_stateful::placement::SqlitePlacement::open(&path)?;
    Ok((Arc::new(p), path))
}

/// Keeps this host's lease (and the table) fresh until shutdown.
async fn keep_lease(me: Weak<Actors>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let Some(a) = me.upgrade() else { return };
        a.beat().await;
        drop(a);
        tokio::select! {
            _ = tokio::time::sleep(LEASE / 3) => {}
            _ = shutdown.changed() => {
                if let Some(a) = me.upgrade() {
                    a.stop().await;
                }
                return;
            }
        }
    }
}

/// Stops every local actor once this host's lease is no longer live,
/// whether or not a heartbeat has come back (one may hang on an engine
/// that stopped answering).
async fn watch_lease(me: Weak<Actors>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(a) = me.upgrade() else { return };
        let lapsed = a.lease_valid_until.load(Ordering::Acquire) > 0 && !a.ready();
        let running = a
            .active
            .lock()
            .expect("actors lock")
            .values()
            .any(|x| !x.gone.load(Ordering::Acquire));
        if lapsed && running {
            a.stop_all_local("the placement lease lapsed (the engine has not answered in time)");
        }
    }
}

/// Deactivates actors idle past their type's `actorIdleTimeout`.
async fn scan_idle(me: Weak<Actors>) {
    loop {
        let Some(a) = me.upgrade() else { return };
        let config = a.config();
        let every = config.scan_interval;
        let now = now_ms();
        let idle: Vec<Key> = a
            .active
            .lock()
            .expect("actors lock")
            .iter()
            .filter(|((t, _), act)| {
                act.queued.load(Ordering::Acquire) == 0
                    && !act.leaving.load(Ordering::Acquire)
                    && act.timers.lock().expect("timers lock").is_empty()
                    && now - act.last_used.load(Ordering::Acquire)
                        > config.of(t).idle_timeout.as_millis() as i64
            })
            .map(|(k, _)| k.clone())
            .collect();
        // Side by side: one actor whose call runs long holds up no other.
        for k in idle {
            let a = a.clone();
            tokio::spawn(async move { a.deactivate(&k).await });
        }
        drop(a);
        tokio::time::sleep(every).await;
    }
}

/// The inbound door: actor calls peer sidecars send here.
pub struct Door(pub Weak<Actors>);

impl tandem_proxy::invoke::ActorDoor for Door {
    fn call(
        &self,
        req: Request<ProxyBody>,
    ) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>> {
        let actors = self.0.clone();
        Box::pin(async move {
            let fail = |e: ApiError| {
                let mut r = e.to_http().map(tandem_proxy::invoke::boxed);
                if let Ok(v) = HeaderValue::from_str(e.error_code) {
                    r.headers_mut().insert(ACTOR_ERROR, v);
                }
                r
            };
            let Some(actors) = actors.upgrade() else {
                return fail(err(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_ACTOR_RUNTIME_CLOSED",
                    "the actor runtime is stopping",
                ));
            };
            let (parts, body) = req.into_parts();
            let path = parts.uri.path().to_string();
            let segs: Vec<String> = path
                .trim_start_matches('/')
                .splitn(4, '/')
                .map(crate::components::metadata::percent_decode)
                .collect();
            let ["actors", t, id, ..] = segs.iter().map(String::as_str).collect::<Vec<_>>()[..]
            else {
                return fail(err(
                    StatusCode::BAD_REQUEST,
                    "ERR_MALFORMED_REQUEST",
                    format!("not an actor path: {path}"),
                ));
            };
            let what = format!(
                "{}{}",
                path.trim_start_matches('/')
                    .splitn(4, '/')
                    .nth(3)
                    .unwrap_or_default(),
                parts
                    .uri
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default()
            );
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return fail(err(
                        StatusCode::BAD_REQUEST,
                        "ERR_MALFORMED_REQUEST",
                        format!("reading the call: {e}"),
                    ));
                }
            };
            let hops_header = parts.headers.get(tandem_proxy::invoke::ACTOR).cloned();
            let call = Call {
                actor_type: t.to_string(),
                actor_id: id.to_string(),
                what,
                method: parts.method,
                headers: parts.headers,
                body,
            };
            let hops = hops_header
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u8>().ok())
                .unwrap_or(1)
                .max(1);
            match actors.call(call, hops).await {
                Ok(a) => answer_response(a),
                Err(e) => fail(e),
            }
        })
    }
}

/// An app's answer as an HTTP response to the caller.
pub fn answer_response(a: Answer) -> Response<ProxyBody> {
    let mut r = Response::builder()
        .status(a.status)
        .body(full(a.body))
        .expect("valid response parts");
    for (k, v) in &a.headers {
        if k == http::header::CONTENT_LENGTH
            || k == http::header::TRANSFER_ENCODING
            || k == http::header::CONNECTION
        {
            continue;
        }
        r.headers_mut().append(k, v.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_due_times_in_daprs_forms() {
        assert_eq!(period("5s").unwrap(), (5_000, None));
        assert_eq!(period("0h0m5s0ms0μs").unwrap(), (5_000, None));
        assert_eq!(period("PT10S").unwrap(), (10_000, None));
        assert_eq!(period("R5/PT10S").unwrap(), (10_000, Some(5)));
        assert_eq!(period("R2/1s").unwrap(), (1_000, Some(2)));
        assert!(period("Rx/PT1S").is_err());
        assert!(period("soon").is_err());
        assert!(period("-5s").is_err());
        let now = 1_000_000;
        assert_eq!(due_ms("", now).unwrap(), 0);
        assert_eq!(due_ms("1.5s", now).unwrap(), 1_500);
        assert_eq!(due_ms("PT1M", now).unwrap(), 60_000);
        assert_eq!(due_ms("1970-01-01T00:16:41Z", now).unwrap(), 1_000);
        assert_eq!(due_ms("1970-01-01T00:00:00Z", now).unwrap(), 0, "past: now");
        assert!(due_ms("tomorrow", now).is_err());
    }

    #[test]
    fn actor_names_refused_with_the_reason() {
        assert!(check_names("T", "1").is_ok());
        assert!(check_names("T", "a b/c").is_ok());
        for (t, id, why) in [
            ("", "1", "type is empty"),
            ("T", " ", "id is empty"),
            ("T", "a||b", "||"),
            ("T", "a\nb", "control"),
        ] {
            let e = check_names(t, id).unwrap_err();
            assert!(e.message.contains(why), "{t}/{id}: {}", e.message);
            assert_eq!(e.http, StatusCode::BAD_REQUEST);
        }
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
