//! The layer's own result when an attempt runs out of time.

use std::time::Duration;

use palisade_core::PaymentError;

/// An attempt exceeded the per-attempt timeout (or the total deadline cut it short) and no retry was left.
///
/// Its outcome is `Unknown`: the request had left, the charge may have happened. Converts into
/// [`PaymentError::GatewayTimeout`], so a stack that speaks `PaymentError` keeps one error type; `tower::BoxError`
/// works too.
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

/// What the layer returns when the last attempt timed out: the one thing the retry layer produces itself.
///
/// [`Typed`] (the default) returns `Err(E::from(AttemptTimedOut))`; [`Http`](crate::http::Http) returns a
/// `504` `application/problem+json` response.
pub trait Mode<Res, E> {
    /// The result for a timed-out last attempt.
    ///
    /// # Errors
    /// In typed mode, always: the timeout as the service's error.
    fn timed_out(&self, err: AttemptTimedOut) -> Result<Res, E>;
}

/// Typed mode: the timeout becomes the service's error type (`E: From<AttemptTimedOut>`, which
/// `PaymentError` and `tower::BoxError` satisfy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Typed;

impl<Res, E: From<AttemptTimedOut>> Mode<Res, E> for Typed {
    fn timed_out(&self, err: AttemptTimedOut) -> Result<Res, E> {
        Err(E::from(err))
    }
}
