//! The builder: trip rules, open durations, probes, per-key bounds, mode and shared store.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};
use palisade_core::mode::{Http, Typed};
use palisade_core::{DefaultClassifier, HttpClassifier};

use crate::breaker::Breaker;
use crate::classify::PaymentRejections;
use crate::config::{ConfigError, LayerRejections, Settings, Window};
use crate::defaults::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_KEYS};
use crate::events::Event;
use crate::keyed::{Keyed, Registry, Single};
use crate::layer::CircuitBreakerLayer;

impl CircuitBreakerLayer {
    /// A builder with the documented defaults: count window of [`DEFAULT_WINDOW_CALLS`](crate::DEFAULT_WINDOW_CALLS)
    /// calls, [`DEFAULT_MINIMUM_CALLS`](crate::DEFAULT_MINIMUM_CALLS) minimum, failure rate
    /// [`DEFAULT_FAILURE_RATE`](crate::DEFAULT_FAILURE_RATE), open for
    /// [`DEFAULT_OPEN_DURATION`](crate::DEFAULT_OPEN_DURATION) growing ×2 per repeated trip up to
    /// [`DEFAULT_MAX_OPEN_DURATION`](crate::DEFAULT_MAX_OPEN_DURATION) with equal jitter,
    /// [`DEFAULT_HALF_OPEN_PROBES`](crate::DEFAULT_HALF_OPEN_PROBES) probes that must all succeed, inner layers'
    /// rejections ignored, typed mode with [`DefaultClassifier`].
    pub fn builder() -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder {
            settings: Settings::default(),
            classifier: DefaultClassifier,
            detector: PaymentRejections,
            mode: Typed,
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }
}

/// Builds a [`CircuitBreakerLayer`]. Every setting has a documented default.
#[must_use]
pub struct CircuitBreakerLayerBuilder<C = DefaultClassifier, D = PaymentRejections, M = Typed> {
    settings: Settings,
    classifier: C,
    detector: D,
    mode: M,
    max_keys: usize,
    idle_timeout: Duration,
    #[cfg(feature = "redis")]
    shared: Option<crate::shared::RedisShared>,
}

impl<C, D, M> fmt::Debug for CircuitBreakerLayerBuilder<C, D, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayerBuilder").field("name", &self.settings.name).finish_non_exhaustive()
    }
}

impl<C, D, M> CircuitBreakerLayerBuilder<C, D, M> {
    /// The breaker's name in events, logs, metrics and Redis keys. Default `"gateway"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Arc::from(name.into());
        self
    }
    /// Count-based window over the last `n` calls (default [`DEFAULT_WINDOW_CALLS`](crate::DEFAULT_WINDOW_CALLS)).
    pub fn window_calls(mut self, n: u32) -> Self {
        self.settings.window = Window::Count(n);
        self
    }
    /// Time-based window over the last `length`.
    pub fn window_time(mut self, length: Duration) -> Self {
        self.settings.window = Window::time(length);
        self
    }
    /// Any [`Window`].
    pub fn window(mut self, window: Window) -> Self {
        self.settings.window = window;
        self
    }
    /// Calls the window must hold before a rate rule may trip (default
    /// [`DEFAULT_MINIMUM_CALLS`](crate::DEFAULT_MINIMUM_CALLS)).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.settings.minimum_calls = n;
        self
    }
    /// Failure rate in `(0, 1]` that trips (default [`DEFAULT_FAILURE_RATE`](crate::DEFAULT_FAILURE_RATE)). Only
    /// `Retriable` and `Unknown` outcomes are failures.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.settings.failure_rate = Some(rate);
        self
    }
    /// Turns the failure-rate rule off (then another rule must be set).
    pub fn no_failure_rate(mut self) -> Self {
        self.settings.failure_rate = None;
        self
    }
    /// Trips after `n` failures in a row, whatever the window says (off by default). Useful for quiet services
    /// that rarely reach the minimum number of calls.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.settings.consecutive_failures = Some(n);
        self
    }
    /// Trips when the share of calls taking at least `threshold` reaches `rate` (off by default). A slow
    /// half-open probe counts as a failed probe.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.settings.slow_threshold = Some(threshold);
        self.settings.slow_rate = Some(rate);
        self
    }
    /// A fixed open duration, no growth, no jitter.
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.settings.open = Backoff { base: d, max: d, factor: 1.0, jitter: Jitter::None };
        self
    }
    /// An open duration that grows with repeated trips (trips without a successful close in between):
    /// `backoff.delay(trips, ...)`, jittered as the backoff says.
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.settings.open = backoff;
        self
    }
    /// Probe calls admitted in half-open (default [`DEFAULT_HALF_OPEN_PROBES`](crate::DEFAULT_HALF_OPEN_PROBES)).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.settings.half_open_probes = n;
        self
    }
    /// Successful probes that close the breaker (default: all probes). Any failed probe reopens it.
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.settings.half_open_successes = Some(n);
        self
    }
    /// What inner layers' own rejections count as (default [`LayerRejections::Ignore`]).
    pub fn layer_rejections(mut self, policy: LayerRejections) -> Self {
        self.settings.layer_rejections = policy;
        self
    }
    /// Calls `f(label, event)` for every event (after the tracing event). Keep it fast: it runs on the caller's
    /// task.
    pub fn on_event(mut self, f: impl Fn(&str, &Event) + Send + Sync + 'static) -> Self {
        self.settings.listener = Some(Arc::new(f));
        self
    }
    /// Seed for the open-duration jitter (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }
    /// Most per-key breakers kept (default [`DEFAULT_MAX_KEYS`](crate::DEFAULT_MAX_KEYS)); see
    /// [`build_keyed`](Self::build_keyed). Breakers that are refusing calls or set by an operator are never dropped
    /// to make room: with only those left, the map holds more until they stop refusing.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }
    /// Idle time after which a per-key breaker that refuses nothing is dropped (default
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::DEFAULT_IDLE_TIMEOUT)).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// A custom classifier (`Classify<Res, E>`, or a closure).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayerBuilder<C2, D, M> {
        CircuitBreakerLayerBuilder {
            settings: self.settings,
            classifier,
            detector: self.detector,
            mode: self.mode,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            #[cfg(feature = "redis")]
            shared: self.shared,
        }
    }
    /// A custom detector of inner layers' rejections (a closure `Fn(&Result<Res, E>) -> bool`, or
    /// [`NoRejections`](crate::NoRejections) for error types that carry none).
    pub fn rejections<D2>(self, detector: D2) -> CircuitBreakerLayerBuilder<C, D2, M> {
        CircuitBreakerLayerBuilder {
            settings: self.settings,
            classifier: self.classifier,
            detector,
            mode: self.mode,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            #[cfg(feature = "redis")]
            shared: self.shared,
        }
    }
    /// HTTP mode: responses are classified by [`HttpClassifier`] (status and `Retry-After`), and a rejection is a
    /// `503` problem+json response with `Retry-After` instead of an error. An inner Palisade layer's own refusal
    /// (a response carrying [`LayerRefusal`](palisade_core::problem::LayerRefusal), as every
    /// `Problem::into_response` of a rate-limited, idempotency, circuit-open or store-unavailable problem does)
    /// counts as [`layer_rejections`](Self::layer_rejections) says, not as a gateway failure.
    pub fn http(self) -> CircuitBreakerLayerBuilder<HttpClassifier, D, Http> {
        CircuitBreakerLayerBuilder {
            settings: self.settings,
            classifier: HttpClassifier,
            detector: self.detector,
            mode: Http,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            #[cfg(feature = "redis")]
            shared: self.shared,
        }
    }

    /// Builds a layer with one breaker for all requests.
    ///
    /// # Errors
    /// [`ConfigError`] when a setting is out of range (a rate outside `(0, 1]`, zero probes, more required
    /// successes than probes, no trip rule). With a shared store, also when no Tokio runtime is running (the sync
    /// task needs one).
    pub fn build(self) -> Result<CircuitBreakerLayer<C, D, M, Single>, ConfigError> {
        let cfg = Arc::new(self.settings.validate()?);
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared {
            let breaker = Arc::new(Breaker::new(cfg.name.clone(), cfg, Some(Arc::default())));
            shared.start_single(&breaker)?;
            return Ok(CircuitBreakerLayer::new(self.classifier, self.detector, self.mode, Single { breaker }));
        }
        let breaker = Arc::new(Breaker::new(cfg.name.clone(), cfg, None));
        Ok(CircuitBreakerLayer::new(self.classifier, self.detector, self.mode, Single { breaker }))
    }

    /// Builds a layer with one breaker per key: `key_fn(&request)` picks the breaker (gateway, merchant, host).
    /// Closed breakers idle for [`idle_timeout`](Self::idle_timeout) are dropped, and when a new key finds
    /// [`max_keys`](Self::max_keys) breakers the least recently used closed ones make room. A breaker that is
    /// refusing calls (open with time left, half-open) or that an operator set (forced open or closed, disabled)
    /// is never dropped, so the map exceeds `max_keys` while only such breakers fill it. Each per-key breaker is
    /// labelled `name/key`.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_keyed<Req, K, F>(self, key_fn: F) -> Result<CircuitBreakerLayer<C, D, M, Keyed<K, F>>, ConfigError>
    where
        F: Fn(&Req) -> K,
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::Zero("max_keys"));
        }
        let cfg = Arc::new(self.settings.validate()?);
        #[cfg(feature = "redis")]
        let wake: Option<Arc<tokio::sync::Notify>> = self.shared.as_ref().map(|_| Arc::default());
        #[cfg(not(feature = "redis"))]
        let wake = None;
        let registry = Arc::new(Registry::new(cfg, self.max_keys, self.idle_timeout, wake.clone()));
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared {
            shared.start_keyed(registry.clone(), wake)?;
        }
        let partition = Keyed { registry, key_fn: Arc::new(key_fn) };
        Ok(CircuitBreakerLayer::new(self.classifier, self.detector, self.mode, partition))
    }
}

#[cfg(feature = "redis")]
impl<C, D, M> CircuitBreakerLayerBuilder<C, D, M> {
    /// Shares the trip decision with the other instances of this service through Redis: the breaker opens
    /// everywhere when the failure (or slow-call) rate of all instances together reaches the threshold. Local
    /// rules still apply to this instance alone. Works for [`build`](Self::build) and
    /// [`build_keyed`](Self::build_keyed) (each key is shared under its own label). See
    /// [`RedisShared`](crate::RedisShared).
    pub fn shared(mut self, store: crate::shared::RedisShared) -> Self {
        self.shared = Some(store);
        self
    }
}
