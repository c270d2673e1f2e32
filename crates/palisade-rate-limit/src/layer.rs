//! The `Layer` and the state every clone shares.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::FailurePolicy;
use tower_layer::Layer;

use crate::config::{OnLimit, RateLimitLayerBuilder};
use crate::error::{RateLimitError, RateLimited};
use crate::gcra::{Admitted, Quota};
use crate::local::{KeyedRateLimiter, RateLimiter};
use crate::service::RateLimit;

/// Where decisions are made.
pub(crate) enum Backend<K: std::hash::Hash + Eq> {
    /// No key function: one atomic word.
    Direct(RateLimiter),
    /// Keyed, in process.
    Keyed(KeyedRateLimiter<K>),
    /// Keyed or not, in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisBackend<K>),
}

/// Everything a layer and its services share, behind one `Arc`.
pub(crate) struct Inner<K: std::hash::Hash + Eq, F, C, P> {
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
    FailOpen,
}

impl Recorded {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Recorded::Admitted => "admitted",
            Recorded::Rejected => "rejected",
            Recorded::ShadowRejected => "shadow_rejected",
            Recorded::StoreUnavailable => "store_unavailable",
            Recorded::FailOpen => "fail_open",
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, F, C, P> Inner<K, F, C, P> {
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
        }
        #[cfg(feature = "metrics")]
        metrics::counter!("palisade_rate_limit_decisions_total", "limiter" => self.name.to_string(), "decision" => what.as_str())
            .increment(1);
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

    /// A decision from whichever backend, with the failure policy applied to store errors.
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
                    _ => {
                        self.record(Recorded::StoreUnavailable, cost, None);
                        Err(RateLimitError::StoreUnavailable(e))
                    }
                },
                other => other,
            },
        }
    }

    /// Applies shadow mode and records the decision; `Ok` means the request goes through.
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
            Err(e @ RateLimitError::StoreUnavailable(_)) => Err(e), // recorded by `decide`
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
                    if tokio::time::Instant::now() + l.retry_after > deadline {
                        return Err(l.into());
                    }
                    tokio::time::sleep(l.retry_after).await;
                }
                other => return other,
            }
        }
    }
}

/// Tower layer that rate limits the services it wraps. Build it with [`RateLimitLayer::builder`].
///
/// Cloning the layer, or any service it made, shares one limiter: a cap of 5 per second stays 5 per second
/// however many clones axum or a `Buffer` makes.
pub struct RateLimitLayer<K: std::hash::Hash + Eq = (), F = crate::Global, C = crate::UnitCost, P = crate::Typed> {
    pub(crate) inner: Arc<Inner<K, F, C, P>>,
}

impl RateLimitLayer {
    /// A builder with the defaults: reject mode, one global limit, cost 1, typed errors, in memory.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }
}

impl<K: std::hash::Hash + Eq, F, C, P> RateLimitLayer<K, F, C, P> {
    /// The quota.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// Keys tracked by a keyed local limiter (1 for a global one; 0 for Redis, which keeps no local state).
    #[must_use]
    pub fn tracked_keys(&self) -> usize
    where
        K: Clone,
    {
        match &self.inner.backend {
            Backend::Direct(_) => 1,
            Backend::Keyed(k) => k.len(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, F, C, P> Clone for RateLimitLayer<K, F, C, P> {
    fn clone(&self) -> Self {
        RateLimitLayer { inner: self.inner.clone() }
    }
}

impl<K: std::hash::Hash + Eq, F, C, P> std::fmt::Debug for RateLimitLayer<K, F, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.inner.name)
            .field("quota", &self.inner.quota)
            .field("on_limit", &self.inner.on_limit)
            .field("shadow", &self.inner.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, K: std::hash::Hash + Eq, F, C, P> Layer<S> for RateLimitLayer<K, F, C, P> {
    type Service = RateLimit<S, K, F, C, P>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.inner.clone())
    }
}
