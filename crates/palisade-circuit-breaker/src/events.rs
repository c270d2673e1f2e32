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

/// The keys of a breaker's per-call counters, made once with its label: `metrics::counter!` with the label would
/// allocate the label and the label list on every rejected call, which is every call while the breaker is open,
/// the fast-fail path that must stay cheap.
#[derive(Debug)]
pub(crate) struct CallKeys {
    /// `palisade_circuit_breaker_rejections_total` in the states that reject: open, forced open, half-open.
    #[cfg(feature = "metrics")]
    rejected: [metrics::Key; 3],
    /// `palisade_circuit_breaker_slow_calls_total`.
    #[cfg(feature = "metrics")]
    slow: metrics::Key,
}

/// What `metrics::counter!` would make for this module (its target and level).
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl CallKeys {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(label: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let rejected = [State::Open, State::ForcedOpen, State::HalfOpen].map(|state| {
                metrics::Key::from_parts(
                    "palisade_circuit_breaker_rejections_total",
                    vec![
                        metrics::Label::new("breaker", label.to_owned()),
                        metrics::Label::new("state", state.as_str()),
                    ],
                )
            });
            let slow = metrics::Key::from_parts(
                "palisade_circuit_breaker_slow_calls_total",
                vec![metrics::Label::new("breaker", label.to_owned())],
            );
            CallKeys { rejected, slow }
        }
        #[cfg(not(feature = "metrics"))]
        CallKeys {}
    }
}

#[cfg(feature = "metrics")]
fn increment(key: &metrics::Key) {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn emit(label: &str, keys: &CallKeys, listener: Option<&Listener>, event: &Event) {
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
            match state {
                State::Open => increment(&keys.rejected[0]),
                State::ForcedOpen => increment(&keys.rejected[1]),
                State::HalfOpen => increment(&keys.rejected[2]),
                // No other state rejects; counted all the same should one ever do.
                other => metrics::counter!("palisade_circuit_breaker_rejections_total",
                    "breaker" => label.to_owned(), "state" => other.as_str())
                .increment(1),
            }
        }
        Event::SlowCall { duration } => {
            tracing::debug!(
                target: "palisade_circuit_breaker",
                breaker = label, duration_ms = duration.as_millis() as u64, "slow call"
            );
            #[cfg(feature = "metrics")]
            increment(&keys.slow);
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
