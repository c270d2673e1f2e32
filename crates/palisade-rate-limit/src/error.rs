//! The layer's refusals, typed, and their conversion into [`PaymentError`].

use std::sync::Arc;
use std::time::Duration;

use palisade_core::PaymentError;

use crate::gcra::{Quota, QuotaError};

/// A request was refused because its key is over its limit. Retrying after `retry_after` succeeds (for a
/// local limiter, exactly then, if nothing else spent the capacity meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {} ms", retry_after.as_millis())]
#[non_exhaustive]
pub struct RateLimited {
    /// How long until the same request would be admitted.
    pub retry_after: Duration,
    /// The quota that refused it (for `RateLimit-Policy`).
    pub quota: Quota,
    /// The name of the limit that refused it (the layer's policy name, for `RateLimit` and `RateLimit-Policy`),
    /// once the layer has attached it.
    pub policy: Option<Arc<str>>,
}

impl RateLimited {
    /// A refusal by `quota`, admissible again after `retry_after`.
    #[must_use]
    pub fn new(retry_after: Duration, quota: Quota) -> Self {
        RateLimited { retry_after, quota, policy: None }
    }
}

/// Everything the rate limit layer can refuse a call with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Over the limit: retry after the given time.
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// The request costs more than the burst, so it can never be admitted.
    #[error(
        "request cost {cost} exceeds the burst of {burst}: it can never be admitted; raise the burst or lower the cost"
    )]
    CostExceedsBurst {
        /// The request's cost.
        cost: u32,
        /// The quota's burst.
        burst: u32,
    },
    /// The shared store (Redis) could not be reached and the failure policy is fail-closed.
    #[error("rate limit store unavailable, call refused (fail-closed); check Redis or opt into fail-open: {0}")]
    StoreUnavailable(PaymentError),
}

impl RateLimitError {
    /// This refusal, naming the limit that made it (a no-op for refusals other than [`RateLimitError::Limited`]).
    #[must_use]
    pub fn with_policy(mut self, name: &Arc<str>) -> Self {
        if let RateLimitError::Limited(l) = &mut self {
            l.policy = Some(name.clone());
        }
        self
    }

    /// The wait after which a retry may succeed, if there is one.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited(l) => Some(l.retry_after),
            _ => None,
        }
    }
}

impl From<RateLimited> for PaymentError {
    fn from(r: RateLimited) -> Self {
        PaymentError::RateLimited { retry_after: Some(r.retry_after) }
    }
}

impl From<RateLimitError> for PaymentError {
    fn from(e: RateLimitError) -> Self {
        match e {
            RateLimitError::Limited(l) => l.into(),
            RateLimitError::CostExceedsBurst { .. } => PaymentError::invalid_request(e.to_string()),
            RateLimitError::StoreUnavailable(p) => p,
        }
    }
}

/// A limit that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No rate was set.
    #[error("no rate set: call .rate(n, period) or .quota(q) on the builder")]
    NoRate,
    /// The quota is invalid.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// `.redis()` was called before `.key_by()`.
    #[error("call .redis(store) after .key_by(..): the Redis key names depend on the key type")]
    RedisBeforeKeyBy,
}
