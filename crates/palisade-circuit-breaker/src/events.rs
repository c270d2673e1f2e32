//! What a breaker reports: transitions, rejections, slow calls, shared-state fallbacks. Every event goes to
//! `tracing` (target `palisade_circuit_breaker`, fields `breaker`, `from`, `to`, `reason`, `retry_after_ms`,
//! `duration_ms`), to `metrics` counters with the `metrics` feature, and to the optional listener.

use std::fmt;
use std::time::Duration;

use std::sync::Arc;

/// Called for every [`Event`] with the breaker's label (`name`, or `name/key` for per-key breakers).
pub type Listener = Arc<dyn Fn(&str, &Event) + Send + Sync>;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected at once until the open time has passed.
    Open,
    /// A bounded number of probe calls pass; the rest are rejected.
    HalfOpen,
    /// Forced open by an operator: every call is rejected until `reset` or `force_closed`.
    ForcedOpen,
    /// Forced closed by an operator: every call passes, outcomes are counted, it never trips.
    ForcedClosed,
    /// Disabled: every call passes, nothing is counted, no events.
    Disabled,
}

impl State {
    /// Stable lowercase name for logs and metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// The consecutive-failure count reached its threshold.
    ConsecutiveFailures,
    /// The open time passed.
    OpenTimeElapsed,
    /// A half-open probe failed.
    ProbeFailed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// The aggregated failure or slow rate of all instances, read from the shared store.
    Shared,
    /// An operator (handle) asked for it.
    Operator,
}

impl Reason {
    /// Stable snake_case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::FailureRate => "failure_rate",
            Reason::SlowCallRate => "slow_call_rate",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::OpenTimeElapsed => "open_time_elapsed",
            Reason::ProbeFailed => "probe_failed",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::Shared => "shared",
            Reason::Operator => "operator",
        }
    }
}

/// Something a breaker did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The state changed.
    Transition {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
        /// For transitions into `Open`: how long it stays open.
        open_for: Option<Duration>,
    },
    /// A call was rejected without reaching the inner service.
    Rejected {
        /// The state that rejected it.
        state: State,
        /// The hint given to the caller.
        retry_after: Option<Duration>,
    },
    /// A call took longer than the slow-call threshold.
    SlowCall {
        /// How long it took.
        duration: Duration,
    },
    /// The shared store could not be reached; the breaker decides from local state alone until it answers again.
    SharedUnavailable {
        /// What failed (no secrets: the store's error message).
        error: String,
    },
    /// The shared store answers again.
    SharedRecovered,
}

pub(crate) fn emit(label: &str, listener: Option<&Listener>, event: &Event) {
    match event {
        Event::Transition { from, to, reason, open_for } => {
            let open_ms = open_for.map(|d| d.as_millis() as u64);
            if *to == State::Open || *to == State::ForcedOpen {
                tracing::warn!(
                    target: "palisade_circuit_breaker",
                    breaker = label, from = from.as_str(), to = to.as_str(), reason = reason.as_str(),
                    retry_after_ms = open_ms, "circuit breaker opened"
                );
            } else {
                tracing::info!(
                    target: "palisade_circuit_breaker",
                    breaker = label, from = from.as_str(), to = to.as_str(), reason = reason.as_str(),
                    "circuit breaker state changed"
                );
            }
            #[cfg(feature = "metrics")]
            metrics::counter!("palisade_circuit_breaker_transitions_total",
                "breaker" => label.to_owned(), "from" => from.as_str(), "to" => to.as_str(), "reason" => reason.as_str())
            .increment(1);
        }
        Event::Rejected { state, retry_after } => {
            tracing::debug!(
                target: "palisade_circuit_breaker",
                breaker = label, state = state.as_str(), retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                "call rejected: circuit open"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("palisade_circuit_breaker_rejections_total",
                "breaker" => label.to_owned(), "state" => state.as_str())
            .increment(1);
        }
        Event::SlowCall { duration } => {
            tracing::debug!(
                target: "palisade_circuit_breaker",
                breaker = label, duration_ms = duration.as_millis() as u64, "slow call"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("palisade_circuit_breaker_slow_calls_total", "breaker" => label.to_owned()).increment(1);
        }
        Event::SharedUnavailable { error } => {
            tracing::warn!(
                target: "palisade_circuit_breaker",
                breaker = label, error = error.as_str(),
                "shared breaker state unreachable: deciding from this instance's calls alone (fail open)"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("palisade_circuit_breaker_shared_unavailable_total", "breaker" => label.to_owned())
                .increment(1);
        }
        Event::SharedRecovered => {
            tracing::info!(target: "palisade_circuit_breaker", breaker = label, "shared breaker state reachable again");
        }
    }
    if let Some(l) = listener {
        l(label, event);
    }
}
