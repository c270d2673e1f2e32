//! The builder: quota, key and cost functions, mode, backend, failure policy.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::FailurePolicy;
use palisade_core::mode::{Http, Typed};

use crate::clock::ClockSource;
use crate::config::{Global, OnLimit, UnitCost};
use crate::defaults::{DEFAULT_MAX_KEYS, DEFAULT_POLICY_NAME};
use crate::error::BuildError;
use crate::gcra::Quota;
use crate::layer::RateLimitLayer;
use crate::local::{KeyedRateLimiter, RateLimiter};
#[cfg(feature = "metrics")]
use crate::service::Recorded;
use crate::service::{Backend, Inner};

impl RateLimitLayer {
    /// A builder with the defaults: reject mode, one global limit, cost 1, typed errors, in memory.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }
}

/// Builds a [`RateLimitLayer`]. Start with [`RateLimitLayer::builder`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct RateLimitLayerBuilder<K = (), F = Global, C = UnitCost, P = Typed> {
    s: Settings,
    key_fn: F,
    cost_fn: C,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisBackendConfig<K>>,
    _p: PhantomData<fn(K) -> P>,
}

/// The builder's settings that do not depend on its type parameters.
#[derive(Debug)]
struct Settings {
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    name: Arc<str>,
    on_limit: OnLimit,
    shadow: bool,
    max_keys: usize,
    failure: FailurePolicy,
    clock: ClockSource,
}

impl<K, F, C, P> std::fmt::Debug for RateLimitLayerBuilder<K, F, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayerBuilder").field("settings", &self.s).finish_non_exhaustive()
    }
}

impl Default for RateLimitLayerBuilder {
    fn default() -> Self {
        RateLimitLayerBuilder {
            s: Settings {
                rate: None,
                burst: None,
                name: Arc::from(DEFAULT_POLICY_NAME),
                on_limit: OnLimit::Reject,
                shadow: false,
                max_keys: DEFAULT_MAX_KEYS,
                failure: FailurePolicy::FailClosed,
                clock: ClockSource::Tokio,
            },
            key_fn: Global,
            cost_fn: UnitCost,
            #[cfg(feature = "redis")]
            redis: None,
            _p: PhantomData,
        }
    }
}

impl<K, F, C, P> RateLimitLayerBuilder<K, F, C, P> {
    /// `rate` units per `period` (required). Burst defaults to `rate`.
    pub fn rate(mut self, rate: u32, period: Duration) -> Self {
        self.s.rate = Some((rate, period));
        self
    }

    /// The whole quota at once.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.s.rate = Some((quota.rate(), quota.period()));
        self.s.burst = Some(quota.burst());
        self
    }

    /// Largest number of units admitted at once (default: the rate, one period's worth).
    pub fn burst(mut self, burst: u32) -> Self {
        self.s.burst = Some(burst);
        self
    }

    /// The limit's name (default [`DEFAULT_POLICY_NAME`]): the `RateLimit-Policy` identifier, the `limiter`
    /// field of tracing events, the metric label, and part of its Redis keys (so two limiters on one Redis keep
    /// apart; the instances of one limiter share its name). Keep it a short token (`gateway-tps`, `per-card`).
    pub fn name(mut self, name: &str) -> Self {
        self.s.name = Arc::from(name);
        self
    }

    /// Reject (default) or wait.
    pub fn on_limit(mut self, on_limit: OnLimit) -> Self {
        self.s.on_limit = on_limit;
        self
    }

    /// Shorthand for `on_limit(OnLimit::Wait { max_wait })`. A wait longer than
    /// [`LONGEST_WAIT`](palisade_core::backoff::LONGEST_WAIT) (a year; `Duration::MAX` for "as long as it takes") is
    /// taken as that.
    pub fn wait(self, max_wait: Duration) -> Self {
        self.on_limit(OnLimit::Wait { max_wait })
    }

    /// Shadow mode: decide and record (tracing event `decision = "shadow_rejected"`, metric), but never refuse.
    /// For rolling out a new limit and watching what it would do. Nothing is refused even when the store (Redis) is
    /// unreachable: under the default fail-closed policy that call is admitted and recorded as
    /// `decision = "shadow_store_unavailable"` (WARN); under fail-open, as `fail_open`.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.s.shadow = shadow;
        self
    }

    /// Most keys a keyed local limiter tracks (default [`DEFAULT_MAX_KEYS`]); also bounds the Redis backend's
    /// local cache.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.s.max_keys = max_keys;
        self
    }

    /// What to do when the store (Redis) cannot be reached: [`FailurePolicy::FailClosed`] (default: refuse with
    /// a 503-class error) or [`FailurePolicy::FailOpen`] (admit and log a warning). In [shadow](Self::shadow) mode
    /// nothing is refused: fail-closed admits and records `shadow_store_unavailable`.
    pub fn on_store_failure(mut self, policy: FailurePolicy) -> Self {
        self.s.failure = policy;
        self
    }

    /// The clock local limiters read (default [`ClockSource::Tokio`], which `tokio::time::pause()` drives).
    /// Redis limits always use Redis server time.
    pub fn clock(mut self, clock: ClockSource) -> Self {
        self.s.clock = clock;
        self
    }

    /// Limits per key: `f` maps a request to its key (merchant id, card token, client IP...). Each key gets the
    /// full quota. Never return a raw card number as a key; use the token or a hash.
    pub fn key_by<Req, K2, F2>(self, f: F2) -> RateLimitLayerBuilder<K2, F2, C, P>
    where
        F2: Fn(&Req) -> K2,
    {
        // A Redis store is kept, but its key naming belongs to the old key type: `build` asks for `.redis()`
        // again rather than silently limiting in memory.
        RateLimitLayerBuilder {
            s: self.s,
            key_fn: f,
            cost_fn: self.cost_fn,
            #[cfg(feature = "redis")]
            redis: self.redis.map(crate::redis::RedisBackendConfig::rekeyed),
            _p: PhantomData,
        }
    }

    /// The number of units a request spends (default 1), e.g. a batch of refunds spends one per refund.
    pub fn cost_by<Req, C2>(self, c: C2) -> RateLimitLayerBuilder<K, F, C2, P>
    where
        C2: Fn(&Req) -> u32,
    {
        RateLimitLayerBuilder {
            s: self.s,
            key_fn: self.key_fn,
            cost_fn: c,
            #[cfg(feature = "redis")]
            redis: self.redis,
            _p: PhantomData,
        }
    }

    /// HTTP mode: refusals become problem+json responses and admitted responses carry `RateLimit` headers.
    pub fn http(self) -> RateLimitLayerBuilder<K, F, C, Http> {
        RateLimitLayerBuilder {
            s: self.s,
            key_fn: self.key_fn,
            cost_fn: self.cost_fn,
            #[cfg(feature = "redis")]
            redis: self.redis,
            _p: PhantomData,
        }
    }

    fn quota_value(&self) -> Result<Quota, BuildError> {
        let (rate, period) = self.s.rate.ok_or(BuildError::NoRate)?;
        let q = Quota::new(rate, period)?;
        Ok(match self.s.burst {
            Some(b) => q.with_burst(b)?,
            None => q,
        })
    }
}

#[cfg(feature = "redis")]
impl<K, F, C, P> RateLimitLayerBuilder<K, F, C, P> {
    /// Keeps the limit in Redis, shared by every instance (call after `key_by`).
    pub fn redis(mut self, store: crate::redis::RedisStore) -> Self
    where
        K: crate::redis::RedisKey,
    {
        self.redis = Some(crate::redis::RedisBackendConfig::new(store));
        self
    }
}

impl<K, F, C, P> RateLimitLayerBuilder<K, F, C, P>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Builds the layer. Every clone of the layer, and every service it makes, shares one state.
    ///
    /// # Errors
    /// [`BuildError`] when no rate was set or the quota is invalid.
    pub fn build(self) -> Result<RateLimitLayer<K, F, C, P>, BuildError> {
        let quota = self.quota_value()?;
        #[cfg(feature = "redis")]
        let backend = match self.redis {
            Some(cfg) => Backend::Redis(crate::redis::RedisBackend::new(cfg, &self.s.name, quota, self.s.max_keys)?),
            None => Self::local_backend(quota, self.s.max_keys, self.s.clock),
        };
        #[cfg(not(feature = "redis"))]
        let backend = Self::local_backend(quota, self.s.max_keys, self.s.clock);
        Ok(RateLimitLayer {
            inner: Arc::new(Inner {
                quota,
                #[cfg(feature = "metrics")]
                decisions: Recorded::keys(&self.s.name),
                name: self.s.name,
                on_limit: self.s.on_limit,
                shadow: self.s.shadow,
                failure: self.s.failure,
                backend,
                key_fn: self.key_fn,
                cost_fn: self.cost_fn,
                queue: Arc::new(tokio::sync::Semaphore::new(1)),
                _p: PhantomData,
            }),
        })
    }

    fn local_backend(quota: Quota, max_keys: usize, clock: ClockSource) -> Backend<K> {
        // A layer without `key_by` has `K = ()`: one atomic word, no map.
        if std::mem::size_of::<K>() == 0 {
            Backend::Direct(RateLimiter::with_clock(quota, clock))
        } else {
            Backend::Keyed(KeyedRateLimiter::with_options(quota, max_keys, clock))
        }
    }
}
