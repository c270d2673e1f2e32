//! [`StoreError`]: a store could not be asked, or did not answer.

/// A store operation failed (the backend unreachable, timed out, or answered garbage). Its message says only
/// what failed, never what happened to the caller's work: that depends on where it failed, and the layer says
/// it. Card-like digit runs in the message are masked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {message}")]
pub struct StoreError {
    message: String,
}

impl StoreError {
    /// A store error with a description of what failed.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: palisade_core::card::mask_card_like(&message.into()) }
    }
    /// What failed.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::new(format!("redis: {e}"))
    }
}

impl From<StoreError> for palisade_core::PaymentError {
    fn from(e: StoreError) -> Self {
        palisade_core::PaymentError::StoreUnavailable { message: e.message.into() }
    }
}
