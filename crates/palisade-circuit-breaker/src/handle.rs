//! Operating a breaker from outside the call path: read its state, force it, disable it, reset it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::Breaker;
use crate::events::State;
use crate::window::Snapshot;

/// A handle on one breaker. Cheap to clone; every clone and every service built from the same layer act on the
/// same breaker.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle").field("breaker", &self.label()).field("state", &self.state()).finish()
    }
}

impl CircuitBreakerHandle {
    /// The breaker's label: its name, or `name/key` for a per-key breaker.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.breaker.label
    }
    /// The current state. An open breaker whose open time has passed reports `Open` until the next call turns
    /// it half-open.
    #[must_use]
    pub fn state(&self) -> State {
        self.breaker.state()
    }
    /// Remaining open time, when open.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        (self.state() == State::Open).then(|| self.breaker.remaining_open())
    }
    /// The calls, failures and slow calls currently in the sliding window.
    #[must_use]
    pub fn window(&self) -> Snapshot {
        self.breaker.snapshot()
    }
    /// Rejects every call until [`reset`](Self::reset) or [`force_closed`](Self::force_closed) (a planned gateway
    /// maintenance, an incident decision).
    pub fn force_open(&self) {
        self.breaker.set(State::ForcedOpen);
    }
    /// Lets every call through and never trips, still counting outcomes, until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.breaker.set(State::ForcedClosed);
    }
    /// Lets every call through, counts nothing, emits no call events, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.breaker.set(State::Disabled);
    }
    /// Back to a fresh closed breaker: empty window, first-trip open duration.
    pub fn reset(&self) {
        self.breaker.set(State::Closed);
    }
}
