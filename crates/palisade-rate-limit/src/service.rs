//! The `Service`, and the state it and every clone of it (and the layer that made them) share.

use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::FailurePolicy;
use palisade_core::backoff::LONGEST_WAIT;
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::{CostFn, KeyFn, OnLimit};
use crate::error::{RateLimitError, RateLimited};
use crate::future::ResponseFuture;
use crate::gcra::{Admitted, Quota};
use crate::http::Decorate;
use crate::local::{KeyedRateLimiter, RateLimiter};

/// Where decisions are made.
pub(crate) enum Backend<K: Hash + Eq> {
    /// No key function: one atomic word.
    Direct(RateLimiter),
    /// Keyed, in process.
    Keyed(KeyedRateLimiter<K>),
    /// Keyed or not, in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisBackend<K>),
}

/// Everything a layer and its services share, behind one `Arc`.
pub(crate) struct Inner<K: Hash + Eq, F, C, P> {
    pub(crate) quota: Quota,
    pub(crate) name: Arc<str>,
    pub(crate) on_limit: OnLimit,
    pub(crate) shadow: bool,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) failure: FailurePolicy,
    pub(crate) backend: Backend<K>,
    pub(crate) key_fn: F,
    pub(crate) cost_fn: C,
    /// FIFO queue of waiters (wait mode): only the head waits for capacity, so waiters are admitted in order.
    pub(crate) queue: Arc<tokio::sync::Semaphore>,
    /// The decision counter's key for each [`Recorded`] (by its index), made once: with the limiter's name as a
    /// label, a key made per call would be a `String` and a label vector.
    #[cfg(feature = "metrics")]
    pub(crate) decisions: [metrics::Key; Recorded::ALL.len()],
    pub(crate) _p: PhantomData<fn() -> P>,
}

/// How a decision turned out, for tracing and metrics (stable names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Recorded {
    Admitted,
    Rejected,
    ShadowRejected,
    StoreUnavailable,
    /// Shadow mode, store unreachable, fail-closed: would have been refused (`StoreUnavailable`), admitted.
    ShadowStoreUnavailable,
    FailOpen,
}

impl Recorded {
    /// Every decision, in index order.
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [Recorded; 6] = [
        Recorded::Admitted,
        Recorded::Rejected,
        Recorded::ShadowRejected,
        Recorded::StoreUnavailable,
        Recorded::ShadowStoreUnavailable,
        Recorded::FailOpen,
    ];

    /// The counter keys of a limiter named `name`, in [`ALL`](Self::ALL) order.
    #[cfg(feature = "metrics")]
    pub(crate) fn keys(name: &str) -> [metrics::Key; Self::ALL.len()] {
        Self::ALL.map(|what| {
            metrics::Key::from_parts(
                "palisade_rate_limit_decisions_total",
                vec![metrics::Label::new("limiter", name.to_owned()), metrics::Label::new("decision", what.as_str())],
            )
        })
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Recorded::Admitted => "admitted",
            Recorded::Rejected => "rejected",
            Recorded::ShadowRejected => "shadow_rejected",
            Recorded::StoreUnavailable => "store_unavailable",
            Recorded::ShadowStoreUnavailable => "shadow_store_unavailable",
            Recorded::FailOpen => "fail_open",
        }
    }
}

impl<K: Hash + Eq, F, C, P> Inner<K, F, C, P> {
    /// Whether the wait mode's FIFO queue is empty: its one turn is free, neither held at the head nor awaited
    /// (the semaphore hands a released turn to a waiter first).
    fn nobody_queued(&self) -> bool {
        self.queue.available_permits() > 0
    }
}

impl<K: Hash + Eq + Clone, F, C, P> Inner<K, F, C, P> {
    /// Records a decision: a tracing event with stable fields (`limiter`, `decision`, `cost`, `retry_after_ms`;
    /// never the key, which may be a card token or an IP) and, with the `metrics` feature, the counter
    /// `palisade_rate_limit_decisions_total{limiter, decision}`.
    pub(crate) fn record(&self, what: Recorded, cost: u32, retry_after: Option<Duration>) {
        let retry_after_ms = retry_after.map_or(0, |d| d.as_millis() as u64);
        match what {
            Recorded::Admitted => {
                tracing::trace!(target: "palisade_rate_limit", limiter = &*self.name, decision = what.as_str(), cost)
            }
            Recorded::Rejected => tracing::debug!(
                target: "palisade_rate_limit",
                limiter = &*self.name,
                decision = what.as_str(),
                cost,
                retry_after_ms,
                "rate limited"
            ),
            Recorded::ShadowRejected => tracing::info!(
                target: "palisade_rate_limit",
                limiter = &*self.name,
                decision = what.as_str(),
                cost,
                retry_after_ms,
                "shadow mode: would have rate limited, admitted"
            ),
            Recorded::StoreUnavailable | Recorded::FailOpen => tracing::warn!(
                target: "palisade_rate_limit",
                limiter = &*self.name,
                decision = what.as_str(),
                cost,
                "rate limit store unreachable"
            ),
            Recorded::ShadowStoreUnavailable => tracing::warn!(
                target: "palisade_rate_limit",
                limiter = &*self.name,
                decision = what.as_str(),
                cost,
                "rate limit store unreachable; shadow mode: would have refused (fail-closed), admitted"
            ),
        }
        #[cfg(feature = "metrics")]
        {
            // What `metrics::counter!` would make (its target and level), with the key made once.
            static METADATA: metrics::Metadata<'static> =
                metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
            metrics::with_recorder(|r| r.register_counter(&self.decisions[what as usize], &METADATA)).increment(1);
        }
    }

    /// A local decision now; `None` for the Redis backend (async).
    #[inline]
    pub(crate) fn decide_local(&self, key: &K, cost: u32) -> Option<Result<Admitted, RateLimitError>> {
        match &self.backend {
            Backend::Direct(l) => Some(l.check_n(cost)),
            Backend::Keyed(l) => Some(l.check_key_n(key, cost)),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// A decision from whichever backend, with the failure policy applied to store errors: fail-open admits (and
    /// records it here); fail-closed returns `StoreUnavailable`, which [`settle`](Self::settle) records and refuses
    /// (or, in shadow mode, admits).
    pub(crate) async fn decide(&self, key: &K, cost: u32) -> Result<Admitted, RateLimitError> {
        match &self.backend {
            Backend::Direct(l) => l.check_n(cost),
            Backend::Keyed(l) => l.check_key_n(key, cost),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => match r.check(key, cost, self.shadow).await {
                Err(RateLimitError::StoreUnavailable(e)) => match self.failure {
                    FailurePolicy::FailOpen => {
                        self.record(Recorded::FailOpen, cost, None);
                        Ok(Admitted::UNKNOWN)
                    }
                    _ => Err(RateLimitError::StoreUnavailable(e)),
                },
                other => other,
            },
        }
    }

    /// Applies shadow mode and records the decision; `Ok` means the request goes through. In shadow mode nothing is
    /// refused, not even for an unreachable store: that is recorded as `shadow_store_unavailable` and admitted.
    pub(crate) fn settle(
        &self,
        decision: Result<Admitted, RateLimitError>,
        cost: u32,
    ) -> Result<Option<Admitted>, RateLimitError> {
        match decision {
            Ok(a) => {
                self.record(Recorded::Admitted, cost, None);
                Ok(Some(a))
            }
            Err(RateLimitError::StoreUnavailable(_)) if self.shadow => {
                self.record(Recorded::ShadowStoreUnavailable, cost, None);
                Ok(None)
            }
            Err(e @ RateLimitError::StoreUnavailable(_)) => {
                self.record(Recorded::StoreUnavailable, cost, None);
                Err(e)
            }
            Err(e) if self.shadow => {
                self.record(Recorded::ShadowRejected, cost, e.retry_after());
                Ok(None)
            }
            Err(e) => {
                self.record(Recorded::Rejected, cost, e.retry_after());
                Err(e)
            }
        }
    }

    /// Wait mode: (global limits) queue in FIFO order unless `turn` is already held, then wait at the head until
    /// the request fits or `deadline` would pass. Capacity is spent only by the successful decision, so dropping
    /// this future at any await spends nothing.
    pub(crate) async fn wait_for(
        &self,
        key: &K,
        cost: u32,
        deadline: tokio::time::Instant,
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Admitted, RateLimitError> {
        // Keyed limiters skip the queue: one hot key must not hold up the others.
        let _turn = match (&self.backend, turn) {
            (_, Some(t)) => Some(t),
            (Backend::Direct(l), None) => {
                match tokio::time::timeout_at(deadline, self.queue.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    // Timed out in the queue (the semaphore is never closed).
                    _ => {
                        return Err(RateLimited::new(l.time_until_available(cost), self.quota).into());
                    }
                }
            }
            _ => None,
        };
        loop {
            match self.decide(key, cost).await {
                Err(RateLimitError::Limited(l)) => {
                    if tokio::time::Instant::now() + l.retry_after.min(LONGEST_WAIT) > deadline {
                        return Err(l.into());
                    }
                    tokio::time::sleep(l.retry_after).await;
                }
                other => return other,
            }
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>;

/// Wait mode, global limit: the state of `poll_ready`'s backpressure.
#[derive(Default)]
struct Readiness {
    /// Waiting for our turn in the FIFO queue.
    acquire: Option<Acquire>,
    /// Our turn: held from `poll_ready` until `call` has decided.
    turn: Option<OwnedSemaphorePermit>,
    /// One timer: the deadline while queued, the next unit while at the head.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When this readiness wait gives up (`max_wait` after it began).
    deadline: Option<Instant>,
    /// `max_wait` passed in `poll_ready`: the next `call` decides at once and is refused if over the limit.
    expired: bool,
}

/// A service rate limited by a [`crate::RateLimitLayer`]. Clones share the layer's limiter.
///
/// The inner service must be `Clone` (as axum and tower services are): when a request has to wait, or asks
/// Redis, the ready inner service travels with the response future.
pub struct RateLimit<S, K: Hash + Eq, F, C, P> {
    inner: S,
    shared: Arc<Inner<K, F, C, P>>,
    ready: Readiness,
}

impl<S, K: Hash + Eq, F, C, P> RateLimit<S, K, F, C, P> {
    pub(crate) fn new(inner: S, shared: Arc<Inner<K, F, C, P>>) -> Self {
        RateLimit { inner, shared, ready: Readiness::default() }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, K: Hash + Eq, F, C, P> Clone for RateLimit<S, K, F, C, P> {
    fn clone(&self) -> Self {
        // A clone starts unready: it has no turn of its own.
        RateLimit { inner: self.inner.clone(), shared: self.shared.clone(), ready: Readiness::default() }
    }
}

impl<S: std::fmt::Debug, K: Hash + Eq, F, C, P> std::fmt::Debug for RateLimit<S, K, F, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, K: Hash + Eq + Clone, F, C, P> RateLimit<S, K, F, C, P> {
    /// Wait mode on a global limit: ready at once when nobody is queued and a unit is free; otherwise not ready
    /// until this service holds the head of the FIFO queue and one unit is available, or `max_wait` has passed.
    /// Nothing is spent here: a caller that gives up (drops the service)
    /// releases its place and costs no capacity.
    fn poll_backpressure(&mut self, cx: &mut Context<'_>, max_wait: Duration) -> Poll<()> {
        let Backend::Direct(limiter) = &self.shared.backend else { return Poll::Ready(()) };
        let r = &mut self.ready;
        if r.expired {
            return Poll::Ready(());
        }
        // Nobody queued (a waiter holds or awaits the one turn) and a unit free now: ready without taking the
        // turn, and `call` decides. Taking it here would hand it, on release, to the next queued caller, whose
        // task may not run for a while; every call in between would queue behind that task, under load all of
        // them, though the limit holds none back. If another call spends the unit first, `call` queues then.
        if r.turn.is_none()
            && r.acquire.is_none()
            && self.shared.nobody_queued()
            && limiter.time_until_available(1).is_zero()
        {
            return Poll::Ready(());
        }
        let deadline = *r.deadline.get_or_insert_with(|| Instant::now() + max_wait.min(LONGEST_WAIT));
        loop {
            if r.turn.is_none() {
                let queue = &self.shared.queue;
                let acquire = r.acquire.get_or_insert_with(|| Box::pin(queue.clone().acquire_owned()));
                match acquire.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        r.turn = Some(permit);
                        r.acquire = None;
                    }
                    // The queue is never closed; if it were, behave as if the wait expired.
                    Poll::Ready(Err(_)) => {
                        r.acquire = None;
                        r.expired = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending => {
                        if poll_timer(&mut r.sleep, deadline, cx).is_ready() {
                            r.acquire = None;
                            r.expired = true;
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    }
                }
            }
            let wait = limiter.time_until_available(1);
            if wait.is_zero() {
                return Poll::Ready(());
            }
            let at = Instant::now() + wait.min(LONGEST_WAIT);
            if at > deadline {
                // It cannot fit in time: give the turn back and let `call` refuse with the exact retry_after.
                r.turn = None;
                r.expired = true;
                return Poll::Ready(());
            }
            if poll_timer(&mut r.sleep, at, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Polls the one timer, (re)armed for `at`.
fn poll_timer(sleep: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
    let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if s.deadline() != at {
        s.as_mut().reset(at);
    }
    s.as_mut().poll(cx)
}

impl<S, Req, K, F, C, P> Service<Req> for RateLimit<S, K, F, C, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: KeyFn<Req, Key = K> + Send + Sync + 'static,
    C: CostFn<Req> + Send + Sync + 'static,
    P: Decorate<S::Response, S::Error> + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Response, S::Error, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let (OnLimit::Wait { max_wait }, false) = (self.shared.on_limit, self.shared.shadow) {
            std::task::ready!(self.poll_backpressure(cx, max_wait));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let key = shared.key_fn.key(&req);
        let cost = shared.cost_fn.cost(&req);
        let ready = std::mem::take(&mut self.ready);
        let deadline = match shared.on_limit {
            OnLimit::Wait { max_wait } if !shared.shadow && !ready.expired => {
                Some(ready.deadline.unwrap_or_else(|| Instant::now() + max_wait.min(LONGEST_WAIT)))
            }
            _ => None,
        };
        // A request that does not hold the queue's turn joins the queue when others wait, to keep the order.
        let queued = deadline.is_some()
            && ready.turn.is_none()
            && matches!(shared.backend, Backend::Direct(_))
            && !shared.nobody_queued();
        if !queued && let Some(decision) = shared.decide_local(&key, cost) {
            let must_wait = deadline.is_some() && matches!(decision, Err(RateLimitError::Limited(_)));
            if !must_wait {
                drop(ready.turn); // decided: the next waiter may go
                return match shared.settle(decision, cost) {
                    Ok(admitted) => {
                        let policy = P::DECORATES.then(|| (shared.name.clone(), shared.quota));
                        ResponseFuture::called(self.inner.call(req), admitted, policy)
                    }
                    Err(e) => ResponseFuture::ready(P::default().refuse(e.with_policy(&shared.name))),
                };
            }
        }
        // Slow path: wait for capacity (keeping our turn), or ask Redis. The ready inner service goes with the
        // future.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let turn = ready.turn;
        ResponseFuture::slow(Box::pin(async move {
            let decision = match deadline {
                Some(deadline) => shared.wait_for(&key, cost, deadline, turn).await,
                None => shared.decide(&key, cost).await,
            };
            match shared.settle(decision, cost) {
                Ok(admitted) => {
                    let res = svc.call(req).await;
                    P::admitted(&shared.name, shared.quota, res, admitted)
                }
                Err(e) => P::default().refuse(e.with_policy(&shared.name)),
            }
        }) as Pin<Box<dyn Future<Output = _> + Send>>)
    }
}
