//! The vocabulary of store-backed layers: the policy for an unreachable store and the typed error it maps to.
//! Connections, keys and the Redis plumbing live in `palisade-store`.

use crate::error::PaymentError;

/// What a layer does when its store cannot be reached.
///
/// The default everywhere money is at stake is [`FailurePolicy::FailClosed`]: refuse the call with a typed
/// error. Losing Redis must never turn into a double charge. Layers that only protect (a circuit breaker, a
/// rate limit a user has chosen to relax) may offer [`FailurePolicy::FailOpen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse the call with [`PaymentError::StoreUnavailable`] (HTTP 503). The inner service is not called.
    #[default]
    FailClosed,
    /// Let the call through as if the store had allowed it, and log a warning.
    FailOpen,
}

/// Maps any store failure into the typed error layers return.
#[must_use]
pub fn unavailable(what: &str, err: &dyn std::fmt::Display) -> PaymentError {
    PaymentError::store_unavailable(format!("{what}: {err}"))
}
