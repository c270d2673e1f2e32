//! Faults the simulator injects: one per call, scripted or drawn from a seeded plan, and per-call latency.

use std::time::Duration;

use palisade_core::{GatewayCode, Operation, PaymentError};
use rand::Rng;
use rand::rngs::StdRng;

/// A fault the simulator can inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The connection fails before the gateway reads the request: nothing happens. `NetworkBeforeSend`.
    FailBeforeCommit,
    /// The gateway performs the operation (ledger and key store updated) but the response is lost: the caller
    /// sees `GatewayTimeout` (`Unknown`).
    FailAfterCommit,
    /// The request times out without the gateway acting on it; the caller cannot tell: `GatewayTimeout`.
    Timeout,
    /// 429 with a retry hint: `RateLimited`.
    RateLimited {
        /// The hint.
        retry_after: Duration,
    },
    /// 503, nothing done: `GatewayUnavailable`.
    Unavailable {
        /// The hint, if any.
        retry_after: Option<Duration>,
    },
    /// A 5xx server error (500, 502, 504) without effect: `GatewayServerError` (`Unknown` to the caller).
    ServerError {
        /// The status.
        status: u16,
    },
}

/// Latency per call: `base` plus a uniform draw in `0..=jitter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Fixed part.
    pub base: Duration,
    /// Random part, uniform.
    pub jitter: Duration,
}

impl Latency {
    /// A fixed latency.
    #[must_use]
    pub const fn fixed(d: Duration) -> Self {
        Latency { base: d, jitter: Duration::ZERO }
    }
}

/// Seeded, reproducible random faults.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rates: Vec<(Option<Operation>, Fault, f64)>,
}

impl FaultPlan {
    /// No faults.
    #[must_use]
    pub fn none() -> Self {
        FaultPlan::default()
    }
    /// Injects `fault` with probability `rate` (0.0..=1.0, clamped) on `op` (or every operation when `None`).
    /// Rules are drawn in the order added; the first that fires wins. A rate that is not a finite number (NaN,
    /// ±∞) counts as 0: the rule never fires.
    #[must_use]
    pub fn with(mut self, op: Option<Operation>, fault: Fault, rate: f64) -> Self {
        self.rates.push((op, fault, probability(rate)));
        self
    }
}

/// `rate` as a probability `random_bool` accepts: clamped to 0.0..=1.0, and 0 when it is not a finite number
/// (a NaN passes `f64::clamp` and would make every draw panic).
pub(crate) fn probability(rate: f64) -> f64 {
    if rate.is_finite() { rate.clamp(0.0, 1.0) } else { 0.0 }
}

/// The error a fault produces when it stops a call before any effect (`None` for faults that let it run).
pub(crate) fn fault_error(fault: Fault) -> Option<PaymentError> {
    match fault {
        Fault::Timeout => Some(PaymentError::timeout("simulated gateway timed out")),
        Fault::RateLimited { retry_after } => Some(PaymentError::RateLimited { retry_after: Some(retry_after) }),
        Fault::Unavailable { retry_after } => Some(PaymentError::GatewayUnavailable { retry_after }),
        Fault::ServerError { status } => {
            Some(PaymentError::GatewayServerError { status, code: Some(GatewayCode::new("api_error")) })
        }
        Fault::FailBeforeCommit => Some(PaymentError::network("connection refused by simulated gateway")),
        Fault::FailAfterCommit => None,
    }
}

impl FaultPlan {
    /// The first rule for `op` whose draw hits, in the order the rules were added.
    pub(crate) fn draw(&self, op: Operation, rng: &mut StdRng) -> Option<Fault> {
        self.rates
            .iter()
            .find(|&&(rule_op, _, rate)| rule_op.is_none_or(|o| o == op) && rng.random_bool(rate))
            .map(|&(_, fault, _)| fault)
    }
}

impl Latency {
    /// One call's latency.
    pub(crate) fn draw(&self, rng: &mut StdRng) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        self.base + Duration::from_nanos(rng.random_range(0..=nanos))
    }
}
