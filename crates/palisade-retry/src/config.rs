//! The builder and its documented defaults.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};
use palisade_core::{DefaultClassifier, HttpClassifier};

use crate::budget::RetryBudget;
pub use crate::defaults::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BASE_DELAY, DEFAULT_DEADLINE, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY,
    DEFAULT_MIN_DELAY,
};
use crate::layer::RetryLayer;
use crate::policy::Policy;
use palisade_core::mode::{Http, Typed};

impl RetryLayer {
    /// A builder with the documented defaults (see [`crate::defaults`]).
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

/// Builder for [`RetryLayer`]; start with [`RetryLayer::builder`]. Every setting has a documented default
/// (`DEFAULT_*` in this module).
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryLayerBuilder<C = DefaultClassifier, M = Typed> {
    classifier: C,
    mode: M,
    settings: Settings,
}

/// The settings that do not depend on the classifier or the mode.
#[derive(Debug, Clone)]
struct Settings {
    backoff: Backoff,
    min_delay: Duration,
    max_attempts: u32,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    assign_key: bool,
    retry_unknown: bool,
    budget: Option<Arc<RetryBudget>>,
    seed: Option<u64>,
}

impl RetryLayerBuilder {
    pub(crate) fn new() -> Self {
        RetryLayerBuilder {
            classifier: DefaultClassifier,
            mode: Typed,
            settings: Settings {
                backoff: Backoff {
                    base: DEFAULT_BASE_DELAY,
                    max: DEFAULT_MAX_DELAY,
                    factor: 2.0,
                    jitter: Jitter::Full,
                },
                min_delay: DEFAULT_MIN_DELAY,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                deadline: Some(DEFAULT_DEADLINE),
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
                assign_key: true,
                retry_unknown: true,
                budget: Some(Arc::new(RetryBudget::default())),
                seed: None,
            },
        }
    }
}

impl<C, M> RetryLayerBuilder<C, M> {
    /// How results are classified (default [`DefaultClassifier`]: `Ok` is success, errors by their kind). Any
    /// `Fn(&Result<Res, E>) -> Outcome` works.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, M> {
        RetryLayerBuilder { classifier, mode: self.mode, settings: self.settings }
    }

    /// HTTP mode: classify with [`HttpClassifier`] (status + `Retry-After`) and answer a timed-out last attempt
    /// with a `504` problem+json response. See [`crate::http`].
    pub fn http(self) -> RetryLayerBuilder<HttpClassifier, Http> {
        RetryLayerBuilder { classifier: HttpClassifier, mode: Http, settings: self.settings }
    }

    /// Attempts per call, the first included (default [`DEFAULT_MAX_ATTEMPTS`]); `1` disables retries. `0` is
    /// treated as `1`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n.max(1);
        self
    }

    /// The whole backoff (base, max, factor, jitter) at once; it is `palisade_core`'s shared [`Backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// The jitter (default [`Jitter::Full`]; [`Jitter::Decorrelated`] for AWS's decorrelated jitter).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.settings.backoff.jitter = jitter;
        self
    }

    /// The base delay (default [`DEFAULT_BASE_DELAY`]): the ceiling of the first retry's delay, doubled per retry;
    /// the floor of decorrelated jitter.
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.settings.backoff.base = d;
        self
    }

    /// A floor on computed delays (default [`DEFAULT_MIN_DELAY`]). `Retry-After` is not raised to it.
    pub fn min_delay(mut self, d: Duration) -> Self {
        self.settings.min_delay = d;
        self
    }

    /// The longest the layer waits before a retry (default [`DEFAULT_MAX_DELAY`]); never more than
    /// [`LONGEST_WAIT`](palisade_core::backoff::LONGEST_WAIT), a year. Computed delays are capped at it. A
    /// `Retry-After` is never shortened to it: one longer than this is not retried (the outcome is returned at
    /// once, `reason = "retry_after_over_max_delay"`), since retrying sooner would call the other side before the
    /// time it gave.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.settings.backoff.max = d;
        self
    }

    /// The total deadline, measured from the call (default [`DEFAULT_DEADLINE`]). No attempt starts and no wait is
    /// scheduled that would end after it; a per-attempt timeout is capped so the attempt ends by it.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.settings.deadline = Some(d);
        self
    }

    /// No total deadline: attempts and waits are bounded only by `max_attempts` and the delays.
    pub fn no_deadline(mut self) -> Self {
        self.settings.deadline = None;
        self
    }

    /// A per-attempt timeout (default none, see [`DEFAULT_ATTEMPT_TIMEOUT`]). An attempt that exceeds it is
    /// abandoned and counts as `Unknown`: retried with the same gateway key, or returned as
    /// [`AttemptTimedOut`](crate::AttemptTimedOut).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.settings.attempt_timeout = Some(d);
        self
    }

    /// Whether the layer assigns a fresh gateway idempotency key to a request that has none (default `true`). With
    /// `false`, a request without a key is never retried after an `Unknown` outcome.
    pub fn assign_gateway_key(mut self, yes: bool) -> Self {
        self.settings.assign_key = yes;
        self
    }

    /// Whether `Unknown` outcomes are retried at all (default `true`, and then only for requests carrying a gateway
    /// key). Set `false` for a gateway that does not deduplicate on its idempotency key.
    pub fn retry_unknown(mut self, yes: bool) -> Self {
        self.settings.retry_unknown = yes;
        self
    }

    /// The retry budget (default [`RetryBudget::default`]: 20 % of recent calls plus 10 per second). Every clone
    /// of the built layer shares it; pass the same `Arc` to several layers to share it between them.
    pub fn budget(mut self, budget: impl Into<Arc<RetryBudget>>) -> Self {
        self.settings.budget = Some(budget.into());
        self
    }

    /// No retry budget: only `max_attempts` and the deadline limit retries. Not recommended in front of a gateway.
    pub fn no_budget(mut self) -> Self {
        self.settings.budget = None;
        self
    }

    /// Seeds the jitter (default: a random seed per layer). For reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// Builds the layer.
    pub fn build(self) -> RetryLayer<C, M> {
        let Settings {
            backoff,
            min_delay,
            max_attempts,
            deadline,
            attempt_timeout,
            assign_key,
            retry_unknown,
            budget,
            seed,
        } = self.settings;
        let seed = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        RetryLayer {
            policy: Arc::new(Policy {
                classifier: self.classifier,
                mode: self.mode,
                backoff,
                min_delay,
                max_attempts,
                deadline,
                attempt_timeout,
                assign_key,
                retry_unknown,
                budget,
                rng: AtomicU64::new(seed),
            }),
        }
    }
}
