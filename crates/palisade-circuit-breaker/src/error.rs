//! The breaker's own refusal, and what it becomes for typed and HTTP callers.

use std::time::Duration;

use palisade_core::mode::Rejection;
use palisade_core::{PaymentError, Problem};

use crate::events::State;

/// The breaker refused the call: the inner service was not called.
///
/// Converts into [`PaymentError::CircuitOpen`] (outcome `Retriable` with the same `retry_after`), and in HTTP
/// mode into a `503 Service Unavailable` problem+json response with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open ({state}): the gateway is failing and calls fail fast; retry after {}", after(.retry_after))]
#[non_exhaustive]
pub struct CircuitOpen {
    /// The state that refused: `Open` (then `retry_after` is the remaining open time), `HalfOpen` (all probe
    /// slots taken) or `ForcedOpen` (no hint: an operator decides).
    pub state: State,
    /// When to come back.
    pub retry_after: Option<Duration>,
}

fn after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("{} ms", d.as_millis()),
        None => "an operator closes it".to_owned(),
    }
}

impl CircuitOpen {
    /// A rejection (for tests and custom services).
    #[must_use]
    pub const fn new(state: State, retry_after: Option<Duration>) -> Self {
        CircuitOpen { state, retry_after }
    }
}

impl Rejection for CircuitOpen {
    /// The problem+json document for this rejection: 503 with `Retry-After` when there is a hint.
    fn to_problem(&self) -> Problem {
        Problem::from_error(&PaymentError::from(*self))
    }
}

impl From<CircuitOpen> for PaymentError {
    fn from(r: CircuitOpen) -> Self {
        PaymentError::CircuitOpen { retry_after: r.retry_after }
    }
}
