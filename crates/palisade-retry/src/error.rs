//! The layer's own result when an attempt runs out of time.

use std::time::Duration;

use palisade_core::mode::Rejection;
use palisade_core::{PaymentError, Problem};

/// An attempt exceeded the per-attempt timeout (or the total deadline cut it short) and no retry was left.
///
/// Its outcome is `Unknown`: the request had left, the charge may have happened. Converts into
/// [`PaymentError::GatewayTimeout`], so a stack that speaks `PaymentError` keeps one error type; `tower::BoxError`
/// works too. It is the one thing the retry layer produces itself: in typed mode (the default) it is the
/// service's error, in HTTP mode a `504` `application/problem+json` response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "gateway attempt {attempt} timed out after {} ms; the charge may have happened: retry only with the same idempotency key",
    .after.as_millis()
)]
pub struct AttemptTimedOut {
    /// How long the attempt ran before it was abandoned.
    pub after: Duration,
    /// Which attempt (1-based).
    pub attempt: u32,
}

impl From<AttemptTimedOut> for PaymentError {
    fn from(e: AttemptTimedOut) -> Self {
        PaymentError::timeout(e.to_string())
    }
}

impl Rejection for AttemptTimedOut {
    /// `504 Gateway Timeout`: what [`Http`](palisade_core::mode::Http) mode answers for a timed-out last attempt.
    fn to_problem(&self) -> Problem {
        Problem::from_error(&PaymentError::from(self.clone()))
    }
}
