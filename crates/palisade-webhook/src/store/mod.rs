//! Delivery deduplication stores: a record per event id, `IN_PROGRESS` (with a lease) → `DONE`.
//!
//! - [`DeliveryStore::claim_with`]: absent → `IN_PROGRESS` with the caller's token and the lease as expiry
//!   ([`Claim::Acquired`]); `IN_PROGRESS` → [`Claim::InProgress`] with the lease's remaining time; `DONE` →
//!   [`Claim::Done`]. The caller draws the token first, so it can release a claim whose answer it never got.
//! - [`DeliveryStore::renew`]: the heartbeat; the layer extends the lease every third of it while the handler
//!   runs, so a handler of any length keeps its claim and a dead one blocks the event for one lease at most.
//! - [`DeliveryStore::complete`]: the handler succeeded; `DONE`, kept for the retention period.
//! - [`DeliveryStore::release`]: the handler failed; the record is deleted so the sender's redelivery runs the
//!   handler again. A process that dies releases nothing: its lease expires instead.
//!
//! Tokens fence stale holders: a handler whose lease expired (and whose event was claimed again) cannot
//! release the new holder's claim.

use std::future::Future;
use std::time::Duration;

use palisade_core::PaymentError;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryDeliveryStore;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, RedisDeliveryStore};

/// Identifies one claim of an event (random, unguessable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(pub(crate) String);

impl ClaimToken {
    /// A fresh random token.
    #[must_use]
    pub fn fresh() -> Self {
        ClaimToken(uuid::Uuid::new_v4().simple().to_string())
    }
    /// The token's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This delivery owns the event: run the handler, then complete or release.
    Acquired(ClaimToken),
    /// Another delivery of the event is running; its lease ends within `retry_after`.
    InProgress {
        /// Remaining lease.
        retry_after: Duration,
    },
    /// The event was already handled.
    Done,
}

/// Atomic operations on delivery records. Errors are [`PaymentError::StoreUnavailable`].
pub trait DeliveryStore: Clone + Send + Sync + 'static {
    /// Claims `event_id` for `lease` with `token` (absent or expired → acquired with that token).
    fn claim_with(
        &self,
        event_id: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, PaymentError>> + Send;

    /// Claims `event_id` for `lease` with a fresh token.
    fn claim(&self, event_id: &str, lease: Duration) -> impl Future<Output = Result<Claim, PaymentError>> + Send {
        let token = ClaimToken::fresh();
        async move { self.claim_with(event_id, &token, lease).await }
    }

    /// Extends `event_id`'s lease to `lease` from now if `token` still holds a live claim. Returns whether it did.
    fn renew(
        &self,
        event_id: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, PaymentError>> + Send;

    /// Marks `event_id` done (kept for `retention`). Also records it when the claim had expired and nobody
    /// else holds it; leaves another holder's claim alone.
    fn complete(
        &self,
        event_id: &str,
        token: &ClaimToken,
        retention: Duration,
    ) -> impl Future<Output = Result<(), PaymentError>> + Send;

    /// Deletes `event_id`'s claim if `token` still holds it.
    fn release(&self, event_id: &str, token: &ClaimToken) -> impl Future<Output = Result<(), PaymentError>> + Send;

    /// False for [`NoDedup`]: the layer then verifies only.
    fn deduplicates(&self) -> bool {
        true
    }
}

/// No deduplication: every verified delivery runs the handler. The layer's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDedup;

impl DeliveryStore for NoDedup {
    async fn claim_with(&self, _event_id: &str, token: &ClaimToken, _lease: Duration) -> Result<Claim, PaymentError> {
        Ok(Claim::Acquired(token.clone()))
    }
    async fn renew(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<bool, PaymentError> {
        Ok(true)
    }
    async fn complete(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<(), PaymentError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &ClaimToken) -> Result<(), PaymentError> {
        Ok(())
    }
    fn deduplicates(&self) -> bool {
        false
    }
}
