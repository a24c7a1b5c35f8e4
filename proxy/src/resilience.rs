//! The resiliency engine (Dapr's `Resiliency` spec, dapr-wire.md §4):
//! timeouts, constant/exponential retries, and circuit breakers with a CEL
//! `trip` expression. One `Policy` wraps any async operation; callers say
//! which failures are worth retrying. Used by component calls now and by
//! service invocation later.

use cel_interpreter::{Context, Program, Value};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_config::{BackoffKind, CircuitBreakerPolicy, RetryPolicy};
use tokio::time::Instant;

/// How a failure is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth another try, and counts against the breaker.
    Transient,
    /// Final: the answer would not change (bad input, ETag mismatch, …).
    /// Does not count against the breaker.
    Permanent,
    /// A failure of the target (counts against the breaker) that must not
    /// be tried again: a non-idempotent request that may have reached it.
    Unrepeatable,
}

/// Errors the engine adds around an operation's own errors.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    #[error("{0}")]
    Inner(E),
    #[error("timed out after {0:?} (resiliency timeout policy)")]
    Timeout(Duration),
    #[error("circuit breaker is open (resiliency circuit breaker policy)")]
    BreakerOpen,
}

#[derive(Clone, Debug)]
pub enum Backoff {
    Constant(Duration),
    /// Dapr's fixed parameters: initial 500 ms, ×1.5, ±50 % jitter.
    Exponential {
        max_interval: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct Retry {
    pub backoff: Backoff,
    /// `None`: no limit.
    pub max_retries: Option<u64>,
    /// `matching.httpStatusCodes`: the answers worth another try; `None`
    /// means every 5xx.
    pub http_status_codes: Option<Vec<(u32, u32)>>,
    /// `matching.gRPCStatusCodes`, for answers of gRPC apps; `None` means
    /// the codes of a failing server (UNKNOWN, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE).
    pub grpc_status_codes: Option<Vec<(u32, u32)>>,
}

impl Retry {
    pub fn from_spec(spec: &RetryPolicy) -> Self {
        let backoff = match spec.policy {
            BackoffKind::Constant => {
                Backoff::Constant(spec.duration.map_or(Duration::from_secs(5), |d| d.0))
            }
            BackoffKind::Exponential => Backoff::Exponential {
                max_interval: spec.max_interval.map_or(Duration::from_secs(60), |d| d.0),
            },
        };
        let max_retries = match spec.max_retries {
            Some(n) if n >= 0 => Some(n as u64),
            _ => None,
        };
        // Checked when the resource was loaded.
        let http_status_codes = spec
            .matching
            .as_ref()
            .and_then(|m| m.http_status_codes.as_deref())
            .and_then(|c| tandem_config::validate::parse_code_ranges(c, 100, 599).ok());
        let grpc_status_codes = spec
            .matching
            .as_ref()
            .and_then(|m| m.grpc_status_codes.as_deref())
            .and_then(|c| tandem_config::validate::parse_code_ranges(c, 0, 16).ok());
        Self {
            backoff,
            max_retries,
            http_status_codes,
            grpc_status_codes,
        }
    }

    /// Whether a gRPC app's answer with `code` is worth another try.
    pub fn retries_grpc_status(&self, code: u32) -> bool {
        match &self.grpc_status_codes {
            Some(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)),
            None => grpc_server_failure(code),
        }
    }
}

/// The gRPC codes of a failing server, the counterpart of HTTP's 5xx:
/// UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
/// UNAVAILABLE.
pub fn grpc_server_failure(code: u32) -> bool {
    matches!(code, 2 | 4 | 8 | 10 | 13 | 14)
}

impl Retry {
    /// Whether an HTTP answer with `status` is worth another try.
    pub fn retries_http_status(&self, status: u16) -> bool {
        let s = u32::from(status);
        match &self.http_status_codes {
            Some(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s)),
            None => s >= 500,
        }
    }

    /// The delay before retry number `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        match &self.backoff {
            Backoff::Constant(d) => *d,
            Backoff::Exponential { max_interval } => {
                let base = 0.5 * 1.5f64.powi(n as i32);
                let jitter = 1.0 + 0.5 * (2.0 * pseudo_random() - 1.0);
                Duration::from_secs_f64((base * jitter).min(max_interval.as_secs_f64()))
            }
        }
    }
}

/// Cheap jitter without a random-number dependency: the clock's low bits.
fn pseudo_random() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Compiles a CEL expression. The CEL parser can panic on some malformed
/// input instead of returning an error; operator-supplied text must never
/// take the sidecar down, so a panic is turned into an error here.
pub fn compile_cel(expr: &str) -> Result<Program, String> {
    match std::panic::catch_unwind(|| Program::compile(expr).map_err(|e| e.to_string())) {
        Ok(result) => result,
        Err(_) => Err("the expression cannot be parsed".into()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// What a policy did to a call, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// A failed attempt is tried again.
    Retry,
    /// An attempt was cut off by the timeout.
    Timeout,
    /// The breaker refused a call (open, or half-open and full).
    BreakerRejected,
    /// The breaker moved to this state.
    BreakerState(BreakerState),
}

/// Told of every activation: target (`app_<id>`, `component_<name>`),
/// flow direction (`outbound`, `inbound`), and what happened.
pub type Observer = Arc<dyn Fn(&str, &'static str, Activation) + Send + Sync>;

/// A policy's place in metrics.
#[derive(Clone)]
pub struct Watch {
    pub target: String,
    pub direction: &'static str,
    pub observer: Observer,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    requests: u64,
    total_successes: u64,
    total_failures: u64,
    consecutive_successes: u64,
    consecutive_failures: u64,
}

struct BreakerInner {
    state: BreakerState,
    counts: Counts,
    opened_at: Option<Instant>,
    window_started: Instant,
    half_open_in_flight: u32,
    /// Counts half-open periods, so a permit of an earlier one gives back
    /// nothing in a later one.
    generation: u64,
}

/// One admitted call. Recording its outcome, or dropping it unrecorded (the
/// caller went away: counted as nothing), gives its half-open slot back.
struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    slot: bool,
    generation: u64,
}

impl Permit<'_> {
    fn record(mut self, success: bool) {
        self.breaker.record(success);
        self.give_back();
    }

    fn give_back(&mut self) {
        if std::mem::take(&mut self.slot) {
            self.breaker.release(self.generation);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// A circuit breaker: trips when `trip` is true over its counts, stays open
/// for `timeout`, then lets `max_requests` through half-open.
pub struct CircuitBreaker {
    name: String,
    max_requests: u32,
    interval: Duration,
    timeout: Duration,
    trip: Program,
    inner: Mutex<BreakerInner>,
}

impl CircuitBreaker {
    pub fn from_spec(name: &str, spec: &CircuitBreakerPolicy) -> Result<Self, String> {
        let expr = spec
            .trip
            .clone()
            .unwrap_or_else(|| "consecutiveFailures > 5".into());
        let trip = compile_cel(&expr).map_err(|e| {
            format!("circuit breaker `{name}`: trip `{expr}` is not valid CEL: {e}")
        })?;
        Ok(Self {
            name: name.to_string(),
            max_requests: spec.max_requests.unwrap_or(1).max(1),
            interval: spec.interval.map_or(Duration::ZERO, |d| d.0),
            timeout: spec.timeout.map_or(Duration::from_secs(60), |d| d.0),
            trip,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                counts: Counts::default(),
                opened_at: None,
                window_started: Instant::now(),
                half_open_in_flight: 0,
                generation: 0,
            }),
        })
    }

    pub fn state(&self) -> BreakerState {
        let mut inner = self.inner.lock().expect("breaker lock");
        self.refresh(&mut inner);
        inner.state
    }

    fn refresh(&self, inner: &mut BreakerInner) {
        if inner.state == BreakerState::Open
            && inner.opened_at.is_some_and(|t| t.elapsed() >= self.timeout)
        {
            inner.state = BreakerState::HalfOpen;
            inner.counts = Counts::default();
            inner.half_open_in_flight = 0;
            inner.generation += 1;
        }
        if inner.state == BreakerState::Closed
            && !self.interval.is_zero()
            && inner.window_started.elapsed() >= self.interval
        {
            inner.counts = Counts::default();
            inner.window_started = Instant::now();
        }
    }

    /// A permit for one call, or `None` when the breaker refuses it. A
    /// half-open slot the permit holds is given back when the permit is
    /// recorded or dropped — a caller that hangs up mid-call must not keep
    /// the breaker half-open and full for ever.
    fn admit(&self) -> Option<Permit<'_>> {
        let mut inner = self.inner.lock().expect("breaker lock");
        self.refresh(&mut inner);
        let slot = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open => return None,
            BreakerState::HalfOpen if inner.half_open_in_flight < self.max_requests => {
                inner.half_open_in_flight += 1;
                true
            }
            BreakerState::HalfOpen => return None,
        };
        Some(Permit {
            breaker: self,
            slot,
            generation: inner.generation,
        })
    }

    /// Gives back a half-open slot taken in the same half-open period.
    fn release(&self, generation: u64) {
        let mut inner = self.inner.lock().expect("breaker lock");
        if inner.generation == generation && inner.state == BreakerState::HalfOpen {
            inner.half_open_in_flight = inner.half_open_in_flight.saturating_sub(1);
        }
    }

    fn record(&self, success: bool) {
        let mut inner = self.inner.lock().expect("breaker lock");
        let c = &mut inner.counts;
        c.requests += 1;
        if success {
            c.total_successes += 1;
            c.consecutive_successes += 1;
            c.consecutive_failures = 0;
        } else {
            c.total_failures += 1;
            c.consecutive_failures += 1;
            c.consecutive_successes = 0;
        }
        match inner.state {
            BreakerState::HalfOpen if !success => self.open(&mut inner),
            BreakerState::HalfOpen
                if inner.counts.consecutive_successes >= u64::from(self.max_requests) =>
            {
                inner.state = BreakerState::Closed;
                inner.counts = Counts::default();
                inner.window_started = Instant::now();
            }
            BreakerState::Closed if !success && self.trips(&inner.counts) => self.open(&mut inner),
            _ => {}
        }
    }

    fn open(&self, inner: &mut BreakerInner) {
        tracing::warn!(breaker = %self.name, "circuit breaker opened");
        inner.state = BreakerState::Open;
        inner.opened_at = Some(Instant::now());
    }

    fn trips(&self, c: &Counts) -> bool {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("requests", Value::UInt(c.requests));
        ctx.add_variable_from_value("totalSuccesses", Value::UInt(c.total_successes));
        ctx.add_variable_from_value("totalFailures", Value::UInt(c.total_failures));
        ctx.add_variable_from_value("consecutiveSuccesses", Value::UInt(c.consecutive_successes));
        ctx.add_variable_from_value("consecutiveFailures", Value::UInt(c.consecutive_failures));
        matches!(self.trip.execute(&ctx), Ok(Value::Bool(true)))
    }
}

/// A retry budget (what Dapr lacks, as linkerd and Envoy have it): retries
/// may add at most `ratio` of the calls made, plus `per_second` retries a
/// second, so a struggling target is not buried under retries of every
/// caller. Tokens: each call deposits `ratio`, each second adds
/// `per_second`, each retry spends one; the balance is capped at ten
/// seconds' worth.
pub struct RetryBudget {
    ratio: f64,
    per_second: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub fn new(ratio: f64, per_second: f64) -> Self {
        Self {
            ratio,
            per_second,
            state: std::sync::Mutex::new((per_second, Instant::now())),
        }
    }

    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let cap = self.per_second * 10.0 + 100.0 * self.ratio;
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_second).min(cap);
        s.1 = now;
    }

    fn deposit(&self) {
        let mut s = self.state.lock().expect("budget lock");
        self.refill(&mut s);
        s.0 += self.ratio;
    }

    fn withdraw(&self) -> bool {
        let mut s = self.state.lock().expect("budget lock");
        self.refill(&mut s);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What `Policy::run_with` may try again.
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    /// Whether the operation can be repeated at all (a streamed request
    /// body cannot).
    pub allowed: bool,
    /// Whether an attempt cut off by the timeout may be repeated (not for
    /// a non-idempotent request the target may be working on).
    pub after_timeout: bool,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            allowed: true,
            after_timeout: true,
        }
    }
}

/// The policy for one target: any of timeout, retry and breaker, and for
/// invoked apps a retry budget.
#[derive(Default)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub breaker: Option<CircuitBreaker>,
    pub budget: Option<RetryBudget>,
    pub watch: Option<Watch>,
    /// The breaker state last reported (0 closed, 1 half-open, 2 open).
    reported: std::sync::atomic::AtomicU8,
}

impl Policy {
    fn note(&self, what: Activation) {
        if let Some(w) = &self.watch {
            (w.observer)(&w.target, w.direction, what);
        }
    }

    /// Reports the breaker's state if it moved since last reported (it
    /// moves on its own from open to half-open, when its timeout ends).
    fn track_breaker(&self) {
        let Some(b) = &self.breaker else { return };
        let now = b.state();
        let code = match now {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        if self
            .reported
            .swap(code, std::sync::atomic::Ordering::Relaxed)
            != code
        {
            self.note(Activation::BreakerState(now));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }

    /// Runs `op` under the policy with every failure worth a retry, and the
    /// error as text (what brokers and the app channel give). An empty
    /// policy runs it once.
    pub async fn run_transient<T, F, Fut>(&self, mut op: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        if self.is_empty() {
            return op().await;
        }
        self.run(op, |_| FailureKind::Transient)
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `op` under the policy. `classify` says whether a failure is
    /// worth a retry; timeouts always are.
    pub async fn run<T, E, F, Fut>(
        &self,
        op: F,
        classify: impl Fn(&E) -> FailureKind,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(op, classify, Retries::default()).await
    }

    /// `run`, with limits on what may be tried again.
    pub async fn run_with<T, E, F, Fut>(
        &self,
        mut op: F,
        classify: impl Fn(&E) -> FailureKind,
        retries: Retries,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt: u32 = 0;
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        loop {
            self.track_breaker();
            let permit = match &self.breaker {
                Some(b) => match b.admit() {
                    Some(p) => Some(p),
                    None => {
                        self.note(Activation::BreakerRejected);
                        return Err(ResilienceError::BreakerOpen);
                    }
                },
                None => None,
            };
            let result = match self.timeout {
                Some(t) => match tokio::time::timeout(t, op()).await {
                    Ok(r) => r.map_err(ResilienceError::Inner),
                    Err(_) => Err(ResilienceError::Timeout(t)),
                },
                None => op().await.map_err(ResilienceError::Inner),
            };
            let kind = match &result {
                Ok(_) => None,
                Err(ResilienceError::Inner(e)) => Some(classify(e)),
                Err(_) if retries.after_timeout => Some(FailureKind::Transient),
                Err(_) => Some(FailureKind::Unrepeatable),
            };
            if matches!(result, Err(ResilienceError::Timeout(_))) {
                self.note(Activation::Timeout);
            }
            if let Some(permit) = permit
                && kind != Some(FailureKind::Permanent)
            {
                permit.record(kind.is_none());
                self.track_breaker();
            }
            match (kind, &self.retry) {
                (Some(FailureKind::Transient), Some(retry))
                    if retries.allowed
                        && retry.max_retries.is_none_or(|m| u64::from(attempt) < m)
                        && self.budget.as_ref().is_none_or(|b| b.withdraw()) =>
                {
                    self.note(Activation::Retry);
                    tokio::time::sleep(retry.delay(attempt)).await;
                    attempt += 1;
                }
                _ => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tandem_config::GoDuration;

    fn resiliency(trip: &str, retries: u32) -> tandem_config::Resiliency {
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      again:\n        policy: constant\n        duration: 1ms\n        maxRetries: {retries}\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 60s\n        trip: {trip}\n  targets:\n    apps:\n      a:\n        circuitBreaker: fuse\n      b:\n        retry: again\n    components:\n      store:\n        outbound:\n          circuitBreaker: fuse\n"
        );
        let mut set = tandem_config::ResourceSet::default();
        let ctx = tandem_config::LoadContext {
            app_id: "me".into(),
            namespace: None,
        };
        tandem_config::load_str(&yaml, std::path::Path::new("r.yaml"), &ctx, &mut set).unwrap();
        set.resiliencies.remove(0).resource
    }

    #[test]
    fn a_reload_keeps_the_policies_whose_settings_did_not_change() {
        let old = Policies::from_resources([&resiliency("consecutiveFailures >= 1", 3)]).unwrap();
        let (a, b, store) = (
            old.app("a"),
            old.app("b"),
            old.component_outbound("store", "Statestore"),
        );
        assert!(Arc::ptr_eq(&a, &old.app("a")), "one policy per target");
        assert!(Arc::ptr_eq(&EMPTY, &old.app("nobody")));
        // Same settings: the very same policies (breaker state and all).
        let mut same =
            Policies::from_resources([&resiliency("consecutiveFailures >= 1", 3)]).unwrap();
        same.inherit(&old);
        assert!(Arc::ptr_eq(&a, &same.app("a")));
        assert!(Arc::ptr_eq(&b, &same.app("b")));
        assert!(Arc::ptr_eq(
            &store,
            &same.component_outbound("store", "Statestore")
        ));
        // Kept over a second reload even where unused in between.
        let mut again =
            Policies::from_resources([&resiliency("consecutiveFailures >= 1", 3)]).unwrap();
        again.inherit(&same);
        let mut third =
            Policies::from_resources([&resiliency("consecutiveFailures >= 1", 3)]).unwrap();
        third.inherit(&again);
        assert!(Arc::ptr_eq(&a, &third.app("a")));
        // Changed breaker: `a` and the store start afresh, `b` is kept.
        let mut changed =
            Policies::from_resources([&resiliency("consecutiveFailures >= 2", 3)]).unwrap();
        changed.inherit(&old);
        assert!(!Arc::ptr_eq(&a, &changed.app("a")));
        assert!(!Arc::ptr_eq(
            &store,
            &changed.component_outbound("store", "Statestore")
        ));
        assert!(Arc::ptr_eq(&b, &changed.app("b")));
        // Changed retries: `b` (and its budget) afresh.
        let mut retries =
            Policies::from_resources([&resiliency("consecutiveFailures >= 1", 4)]).unwrap();
        retries.inherit(&old);
        assert!(!Arc::ptr_eq(&b, &retries.app("b")));
        assert!(Arc::ptr_eq(&a, &retries.app("a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_budget_caps_retries() {
        let p = Policy {
            retry: Some(Retry {
                backoff: Backoff::Constant(Duration::ZERO),
                max_retries: Some(100),
                http_status_codes: None,
                grpc_status_codes: None,
            }),
            budget: Some(RetryBudget::new(0.25, 1.0)),
            ..Default::default()
        };
        let calls = AtomicU32::new(0);
        let failing_call = || async {
            p.run(
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>("down") }
                },
                |_| FailureKind::Transient,
            )
            .await
        };
        assert!(failing_call().await.is_err());
        assert_eq!(
            calls.swap(0, Ordering::SeqCst),
            2,
            "one retry from the starting balance"
        );
        for _ in 0..10 {
            assert!(failing_call().await.is_err());
        }
        assert_eq!(
            calls.swap(0, Ordering::SeqCst),
            12,
            "ten calls earn two and a half retries"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(failing_call().await.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "three seconds earn three more"
        );
    }

    fn retry(n: i64) -> Retry {
        Retry::from_spec(&RetryPolicy {
            policy: BackoffKind::Constant,
            duration: Some(GoDuration(Duration::from_millis(10))),
            max_retries: Some(n),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let p = Policy {
            retry: Some(retry(2)),
            ..Default::default()
        };
        let r: Result<(), _> = p
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("down")
                },
                |_| FailureKind::Transient,
            )
            .await;
        assert!(matches!(r, Err(ResilienceError::Inner("down"))));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one try and two retries");

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = p
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("bad input")
                },
                |_| FailureKind::Permanent,
            )
            .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "permanent failures are not retried"
        );

        calls.store(0, Ordering::SeqCst);
        let r = p
            .run(
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 2 { Err("flaky") } else { Ok(n) }
                },
                |_| FailureKind::Transient,
            )
            .await;
        assert_eq!(r.unwrap(), 2, "succeeds on the third try");
    }

    #[tokio::test(start_paused = true)]
    async fn unrepeatable_failures_count_against_the_breaker_but_are_not_retried() {
        let calls = AtomicU32::new(0);
        let p = Policy {
            retry: Some(retry(5)),
            timeout: Some(Duration::from_millis(50)),
            breaker: Some(
                CircuitBreaker::from_spec(
                    "cb",
                    &CircuitBreakerPolicy {
                        trip: Some("consecutiveFailures >= 2".into()),
                        ..Default::default()
                    },
                )
                .unwrap(),
            ),
            ..Default::default()
        };
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("reset after sending")
        };
        let r = p.run(failing, |_| FailureKind::Unrepeatable).await;
        assert!(matches!(r, Err(ResilienceError::Inner(_))));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "not repeated");
        // A timeout is not repeated when told so.
        let no_timeout_retry = Retries {
            allowed: true,
            after_timeout: false,
        };
        let slow = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), &str>(())
        };
        let r = p
            .run_with(slow, |_| FailureKind::Transient, no_timeout_retry)
            .await;
        assert!(matches!(r, Err(ResilienceError::Timeout(_))));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
        assert_eq!(
            p.breaker.as_ref().unwrap().state(),
            BreakerState::Open,
            "both counted"
        );
        // Nothing is repeated when repeating is not allowed at all.
        let q = Policy {
            retry: Some(retry(5)),
            ..Default::default()
        };
        let once = Retries {
            allowed: false,
            after_timeout: false,
        };
        let r = q.run_with(failing, |_| FailureKind::Transient, once).await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_cut_slow_calls() {
        let p = Policy {
            timeout: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let r: Result<(), ResilienceError<&str>> = p
            .run(
                || async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                },
                |_| FailureKind::Transient,
            )
            .await;
        assert!(matches!(r, Err(ResilienceError::Timeout(_))));
    }

    /// A half-open probe whose caller hangs up (its future dropped before
    /// the answer) gives its slot back: the breaker lets the next probe
    /// through instead of refusing every call until a reload.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_half_open_probe_gives_its_slot_back() {
        let spec = CircuitBreakerPolicy {
            max_requests: Some(1),
            timeout: Some(GoDuration(Duration::from_secs(30))),
            trip: Some("consecutiveFailures >= 1".into()),
            ..Default::default()
        };
        let p = Policy {
            breaker: Some(CircuitBreaker::from_spec("cb", &spec).unwrap()),
            ..Default::default()
        };
        let _ = p
            .run(
                || async { Err::<(), _>("down") },
                |_| FailureKind::Transient,
            )
            .await;
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(31)).await;
        // The probe goes to a slow method; the caller gives up after 1 s.
        let slow = p.run(
            || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, &str>(())
            },
            |_| FailureKind::Transient,
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(1), slow)
                .await
                .is_err()
        );
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::HalfOpen);
        let r = p
            .run(|| async { Ok::<_, &str>(()) }, |_| FailureKind::Transient)
            .await;
        assert!(r.is_ok(), "the next probe is let through: {r:?}");
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_half_opens_and_closes() {
        let spec = CircuitBreakerPolicy {
            max_requests: Some(1),
            timeout: Some(GoDuration(Duration::from_secs(30))),
            trip: Some("consecutiveFailures >= 3".into()),
            ..Default::default()
        };
        let p = Policy {
            breaker: Some(CircuitBreaker::from_spec("cb", &spec).unwrap()),
            ..Default::default()
        };
        let calls = AtomicU32::new(0);
        let fail = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("down")
        };
        for _ in 0..3 {
            let _ = p.run(fail, |_| FailureKind::Transient).await;
        }
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::Open);
        let r = p.run(fail, |_| FailureKind::Transient).await;
        assert!(matches!(r, Err(ResilienceError::BreakerOpen)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "an open breaker does not call"
        );

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::HalfOpen);
        p.run(|| async { Ok::<_, &str>(()) }, |_| FailureKind::Transient)
            .await
            .unwrap();
        assert_eq!(p.breaker.as_ref().unwrap().state(), BreakerState::Closed);
    }

    #[test]
    fn a_bad_trip_expression_is_refused() {
        let spec = CircuitBreakerPolicy {
            trip: Some("consecutiveFailures >>> 3".into()),
            ..Default::default()
        };
        let e = CircuitBreaker::from_spec("cb", &spec).err().unwrap();
        assert!(e.contains("not valid CEL"), "{e}");
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let r = Retry::from_spec(&RetryPolicy {
            policy: BackoffKind::Exponential,
            max_interval: Some(GoDuration(Duration::from_secs(2))),
            ..Default::default()
        });
        assert!(r.delay(0) <= Duration::from_millis(750));
        assert!(r.delay(10) <= Duration::from_secs(2));
        assert!(r.max_retries.is_none(), "-1 / unset means no limit");
    }
}

/// Every `Resiliency` resource of a snapshot, merged, answering "which
/// policy applies to this target", with Dapr's default-policy names.
#[derive(Default)]
pub struct Policies {
    timeouts: std::collections::BTreeMap<String, Duration>,
    retries: std::collections::BTreeMap<String, RetryPolicy>,
    breakers: std::collections::BTreeMap<String, CircuitBreakerPolicy>,
    components: std::collections::BTreeMap<String, tandem_config::ComponentTargetPolicy>,
    apps: std::collections::BTreeMap<String, tandem_config::TargetPolicy>,
    actors: std::collections::BTreeMap<String, tandem_config::ActorTargetPolicy>,
    observer: Option<Observer>,
    /// The policies handed out, by target, with what they were built from:
    /// each target keeps one policy (its breaker and budget state) for the
    /// life of this set.
    built: Mutex<Targets>,
    /// The previous set's policies (a reload): a target whose policy is
    /// built from the same settings takes the old one over, state and all.
    inherited: Targets,
}

/// Policies by target: invoked apps by app id (looked up per call, without
/// allocating), components by building block, name and direction, actors
/// by type (or type and id, for breakers scoped to an id).
#[derive(Clone, Default)]
struct Targets {
    apps: std::collections::HashMap<String, Built>,
    components: std::collections::HashMap<String, Built>,
    actors: std::collections::HashMap<String, Built>,
}

/// Which of [`Targets`]' maps.
#[derive(Clone, Copy)]
enum Kind {
    App,
    Component,
    Actor,
}

impl Targets {
    fn get(&self, kind: Kind, key: &str) -> Option<&Built> {
        self.map(kind).get(key)
    }

    fn map(&self, kind: Kind) -> &std::collections::HashMap<String, Built> {
        match kind {
            Kind::App => &self.apps,
            Kind::Component => &self.components,
            Kind::Actor => &self.actors,
        }
    }

    fn of(&mut self, kind: Kind) -> &mut std::collections::HashMap<String, Built> {
        match kind {
            Kind::App => &mut self.apps,
            Kind::Component => &mut self.components,
            Kind::Actor => &mut self.actors,
        }
    }
}

/// A policy handed out and the settings it was built from.
type Built = (PolicySpec, Arc<Policy>);

/// Targets kept in `Policies::built` at most: app ids come from callers,
/// so past this many, further targets get a policy of their own per call
/// (correct, but their breakers and budgets keep no state).
pub const MAX_TARGETS_KEPT: usize = 4096;

/// What one target's policy is made of, resolved (names looked up): equal
/// settings make an equal policy.
#[derive(Clone, Debug, PartialEq)]
struct PolicySpec {
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    breaker: Option<(String, CircuitBreakerPolicy)>,
    budget: bool,
}

/// The policy of every target without settings: nothing to keep.
static EMPTY: std::sync::LazyLock<Arc<Policy>> =
    std::sync::LazyLock::new(|| Arc::new(Policy::default()));

impl PolicySpec {
    const NONE: PolicySpec = PolicySpec {
        timeout: None,
        retry: None,
        breaker: None,
        budget: false,
    };
}

impl Policies {
    /// Merges resources in order (a later definition of a name wins) and
    /// checks every breaker's `trip` expression.
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a tandem_config::Resiliency>,
    ) -> Result<Self, String> {
        let mut p = Policies::default();
        for r in resources {
            let spec = &r.spec;
            p.timeouts
                .extend(spec.policies.timeouts.iter().map(|(k, v)| (k.clone(), v.0)));
            p.retries.extend(spec.policies.retries.clone());
            for (name, cb) in &spec.policies.circuit_breakers {
                CircuitBreaker::from_spec(name, cb)
                    .map_err(|e| format!("resiliency `{}`: {e}", r.metadata.name))?;
                p.breakers.insert(name.clone(), cb.clone());
            }
            for (t, a) in &spec.targets.actors {
                match (&a.circuit_breaker, a.circuit_breaker_scope.as_deref()) {
                    (Some(_), None) => {
                        return Err(format!(
                            "resiliency `{}`: targets.actors.{t} names a circuitBreaker without circuitBreakerScope; add circuitBreakerScope: type, id or both",
                            r.metadata.name
                        ));
                    }
                    (_, Some(scope)) if !matches!(scope, "type" | "id" | "both") => {
                        return Err(format!(
                            "resiliency `{}`: targets.actors.{t}.circuitBreakerScope is `{scope}`; use type, id or both",
                            r.metadata.name
                        ));
                    }
                    _ => {}
                }
            }
            p.components.extend(spec.targets.components.clone());
            p.apps.extend(spec.targets.apps.clone());
            p.actors.extend(spec.targets.actors.clone());
        }
        Ok(p)
    }

    /// Every policy built from now on reports its activations to `observer`.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Takes over `previous`'s policies (a reload): a target whose settings
    /// did not change keeps its policy — breaker state, open or not, and
    /// retry budget — instead of starting afresh.
    pub fn inherit(&mut self, previous: &Policies) {
        // What the previous set used, then what it had inherited and not
        // used (a target not called between two quick reloads), bounded.
        let mut all = previous.built.lock().expect("policies").clone();
        for (to, from) in [
            (&mut all.apps, &previous.inherited.apps),
            (&mut all.components, &previous.inherited.components),
            (&mut all.actors, &previous.inherited.actors),
        ] {
            for (k, v) in from {
                if to.len() >= MAX_TARGETS_KEPT {
                    break;
                }
                to.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self.inherited = all;
    }

    /// The policy of target `key` (an app id when `app`), whose settings
    /// `spec` gives: the one handed out before, the previous set's when its
    /// settings are the same, else a new one.
    fn get_or_build(
        &self,
        kind: Kind,
        key: &str,
        name: &str,
        spec: impl FnOnce() -> PolicySpec,
        watch: impl FnOnce() -> Option<Watch>,
    ) -> Arc<Policy> {
        let mut built = self.built.lock().expect("policies");
        if let Some((_, p)) = built.get(kind, key) {
            return p.clone();
        }
        let spec = spec();
        let policy = match self.inherited.get(kind, key) {
            Some((old, p)) if *old == spec => p.clone(),
            _ if spec == PolicySpec::NONE => EMPTY.clone(),
            _ => {
                let mut p = self.build(name, &spec);
                p.watch = watch();
                Arc::new(p)
            }
        };
        let map = built.of(kind);
        if map.len() < MAX_TARGETS_KEPT {
            map.insert(key.to_string(), (spec, policy.clone()));
        }
        policy
    }

    /// The outbound policy (sidecar → component) of component `name` of
    /// building block `kind` (`Statestore`, `Pubsub`, `Binding`, …): its
    /// explicit target, else the `Default…Policy` names, most specific first.
    pub fn component_outbound(&self, name: &str, kind: &str) -> Arc<Policy> {
        let explicit = self.components.get(name).and_then(|c| c.outbound.as_ref());
        self.component_policy(name, kind, "Outbound", explicit)
    }

    /// The inbound policy (sidecar → app, e.g. event delivery) of a component.
    pub fn component_inbound(&self, name: &str, kind: &str) -> Arc<Policy> {
        let explicit = self.components.get(name).and_then(|c| c.inbound.as_ref());
        self.component_policy(name, kind, "Inbound", explicit)
    }

    /// The timeout of a call to an actor of `actor_type`: its
    /// `targets.actors` entry, else `DefaultActorTimeoutPolicy`, else
    /// `DefaultTimeoutPolicy`.
    pub fn actor_timeout(&self, actor_type: &str) -> Option<Duration> {
        let named = self
            .actors
            .get(actor_type)
            .and_then(|t| t.timeout.clone())
            .or_else(|| {
                ["DefaultActorTimeoutPolicy", "DefaultTimeoutPolicy"]
                    .into_iter()
                    .find(|n| self.timeouts.contains_key(*n))
                    .map(str::to_string)
            })?;
        self.timeouts
            .get(&named)
            .copied()
            .or_else(|| tandem_config::parse_duration(&named).ok())
    }

    /// The policy around a whole call to actor `actor_type`/`actor_id`
    /// (before it waits for its turn, as daprd's pre-lock policy): the
    /// retry and circuit breaker of its `targets.actors` entry, else
    /// `DefaultActor…Policy`, else `Default…Policy`. The breaker is one per
    /// type, or one per actor id when the target's `circuitBreakerScope`
    /// is `id` or `both`. The timeout is the call's own
    /// ([`Policies::actor_timeout`]), not part of this policy.
    pub fn actor(&self, actor_type: &str, actor_id: &str) -> Arc<Policy> {
        let explicit = self.actors.get(actor_type);
        let per_id = explicit.is_some_and(|t| {
            t.circuit_breaker.is_some()
                && matches!(t.circuit_breaker_scope.as_deref(), Some("id" | "both"))
        });
        // Looked up per call: only an id-scoped key is built.
        let key: std::borrow::Cow<str> = if per_id {
            format!("{actor_type}||{actor_id}").into()
        } else {
            actor_type.into()
        };
        let spec = || {
            let named = explicit.map(|t| tandem_config::TargetPolicy {
                timeout: None,
                retry: t.retry.clone(),
                circuit_breaker: t.circuit_breaker.clone(),
                circuit_breaker_cache_size: None,
            });
            let mut spec = self.spec(named.as_ref(), |what| {
                vec![
                    format!("DefaultActor{what}Policy"),
                    format!("Default{what}Policy"),
                ]
            });
            spec.timeout = None;
            spec
        };
        let watch = || self.watch(format!("actor_{actor_type}"), "outbound");
        self.get_or_build(Kind::Actor, &key, &key, spec, watch)
    }

    /// The policy for calls to app `app_id` (service invocation): its
    /// `targets.apps` entry, else `DefaultApp…Policy`, else `Default…Policy`;
    /// with retries, a retry budget.
    pub fn app(&self, app_id: &str) -> Arc<Policy> {
        let defaults = |what: &str| {
            vec![
                format!("DefaultApp{what}Policy"),
                format!("Default{what}Policy"),
            ]
        };
        let spec = || {
            let mut spec = self.spec(self.apps.get(app_id), defaults);
            spec.budget = spec.retry.is_some();
            spec
        };
        let watch = || self.watch(format!("app_{app_id}"), "outbound");
        self.get_or_build(Kind::App, app_id, app_id, spec, watch)
    }

    fn component_policy(
        &self,
        name: &str,
        kind: &str,
        direction: &str,
        explicit: Option<&tandem_config::TargetPolicy>,
    ) -> Arc<Policy> {
        let defaults = |what: &str| {
            vec![
                format!("Default{kind}Component{direction}{what}Policy"),
                format!("DefaultComponent{direction}{what}Policy"),
                format!("DefaultComponent{what}Policy"),
                format!("Default{what}Policy"),
            ]
        };
        let spec = || self.spec(explicit, defaults);
        let watch = || {
            self.watch(
                format!("component_{name}"),
                if direction == "Inbound" {
                    "inbound"
                } else {
                    "outbound"
                },
            )
        };
        let key = format!("{kind}/{name}/{direction}");
        self.get_or_build(Kind::Component, &key, name, spec, watch)
    }

    fn watch(&self, target: String, direction: &'static str) -> Option<Watch> {
        self.observer.clone().map(|observer| Watch {
            target,
            direction,
            observer,
        })
    }

    /// The settings of a target's policy: the names it gives, else the
    /// first of `defaults` that exists, looked up.
    fn spec(
        &self,
        explicit: Option<&tandem_config::TargetPolicy>,
        defaults: impl Fn(&str) -> Vec<String>,
    ) -> PolicySpec {
        let pick = |named: Option<&String>, what: &str| -> Option<String> {
            named.cloned().or_else(|| {
                defaults(what).into_iter().find(|n| match what {
                    "Timeout" => self.timeouts.contains_key(n),
                    "Retry" => self.retries.contains_key(n),
                    _ => self.breakers.contains_key(n),
                })
            })
        };
        let timeout = pick(explicit.and_then(|t| t.timeout.as_ref()), "Timeout").and_then(|n| {
            self.timeouts
                .get(&n)
                .copied()
                .or_else(|| tandem_config::parse_duration(&n).ok())
        });
        let retry = pick(explicit.and_then(|t| t.retry.as_ref()), "Retry")
            .and_then(|n| self.retries.get(&n).cloned());
        let breaker = pick(
            explicit.and_then(|t| t.circuit_breaker.as_ref()),
            "CircuitBreaker",
        )
        .and_then(|n| self.breakers.get(&n).map(|spec| (n, spec.clone())));
        PolicySpec {
            timeout,
            retry,
            breaker,
            budget: false,
        }
    }

    /// A fresh policy (new breaker state) for target `name` from `spec`.
    fn build(&self, name: &str, spec: &PolicySpec) -> Policy {
        Policy {
            timeout: spec.timeout,
            retry: spec.retry.as_ref().map(Retry::from_spec),
            breaker: spec
                .breaker
                .as_ref()
                .and_then(|(n, cb)| CircuitBreaker::from_spec(&format!("{name}/{n}"), cb).ok()),
            // Retries may add a fifth to the calls, plus ten a second.
            budget: spec.budget.then(|| RetryBudget::new(0.2, 10.0)),
            watch: None,
            reported: Default::default(),
        }
    }
}
