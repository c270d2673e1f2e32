//! [`Policy`]: what a retry layer, its services and their futures share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::backoff::Backoff;

use crate::budget::RetryBudget;

/// Everything a call needs, shared by the layer, its services and their futures.
pub(crate) struct Policy<C, M> {
    pub(crate) classifier: C,
    pub(crate) mode: M,
    pub(crate) backoff: Backoff,
    pub(crate) min_delay: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) assign_key: bool,
    pub(crate) retry_unknown: bool,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) rng: AtomicU64,
}

impl<C, M> Policy<C, M> {
    /// Whether a call needs the clock at all (deadline, budget or timeout configured).
    pub(crate) fn needs_clock(&self) -> bool {
        self.deadline.is_some() || self.budget.is_some() || self.attempt_timeout.is_some()
    }

    /// A uniform number in `[0, 1)` (SplitMix64 over a shared counter: cheap, lock-free, seedable).
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The computed (not `Retry-After`) delay before retry number `retry` (0-based).
    pub(crate) fn backoff_delay(&self, retry: u32, previous: Option<Duration>) -> Duration {
        self.backoff.delay(retry, previous, self.unit()).max(self.min_delay).min(self.backoff.max)
    }
}

impl<C, M> Policy<C, M> {
    pub(crate) fn fmt_fields(&self, d: &mut std::fmt::DebugStruct<'_, '_>) {
        d.field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("min_delay", &self.min_delay)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("assign_gateway_key", &self.assign_key)
            .field("retry_unknown", &self.retry_unknown)
            .field("budget", &self.budget);
    }
}
