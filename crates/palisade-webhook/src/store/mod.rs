//! Delivery deduplication stores: a record per event id, `IN_PROGRESS` (with a lease) → `DONE`.
//!
//! - [`DeliveryStore::claim_as`]: absent → `IN_PROGRESS` held by the caller's attempt, with the lease as expiry
//!   ([`Claim::Acquired`]); `IN_PROGRESS` → [`Claim::InProgress`] with the lease's remaining time; `DONE` →
//!   [`Claim::Done`]. The caller draws the attempt's [`ClaimToken`] before claiming, so it can undo a claim whose
//!   answer it never got ([`DeliveryStore::abandon`]).
//! - [`DeliveryStore::renew`]: the heartbeat; the layer extends the lease every third of it while the handler
//!   runs, so a handler of any length keeps its claim and a dead one blocks the event for one lease at most.
//! - [`DeliveryStore::complete`]: the handler succeeded; `DONE`, kept for the retention period.
//! - [`DeliveryStore::release`]: the handler failed; the record is deleted so the sender's redelivery runs the
//!   handler again. A process that dies releases nothing: its lease expires instead.
//! - [`DeliveryStore::abandon`]: a claim failed or timed out, but may have landed (or land later): it is deleted
//!   if that attempt still holds it, so the store's 503 never leaves the event blocked.
//!
//! Tokens fence stale holders: a handler whose lease expired (and whose event was claimed again) cannot
//! renew, complete or release the new holder's claim.
//!
//! These are the operations of the idempotency store's lease protocol (`palisade-idempotency`), for records
//! without a fingerprint or a stored response: there the store issues increasing fencing tokens and a claim
//! also records a random attempt number for `abandon`; here the token is random and drawn by the caller, so a
//! claim's token *is* its attempt id.

use std::future::Future;
use std::time::Duration;

use palisade_core::PaymentError;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryDeliveryStore;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, RedisDeliveryStore};

/// Identifies one claim of an event, and the attempt that made it (random, unguessable, drawn by the caller).
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
///
/// An error says only that the store could not be asked or did not answer: the operation may still have taken
/// effect (a stalled store executes it later). The layer decides what that means for the delivery.
pub trait DeliveryStore: Clone + Send + Sync + 'static {
    /// Claims `event_id` for `lease`, held by `attempt` (absent or expired → [`Claim::Acquired`] with
    /// `attempt` as the claim's token).
    fn claim_as(
        &self,
        event_id: &str,
        lease: Duration,
        attempt: &ClaimToken,
    ) -> impl Future<Output = Result<Claim, PaymentError>> + Send;

    /// Claims `event_id` for `lease` with a fresh token.
    fn claim(&self, event_id: &str, lease: Duration) -> impl Future<Output = Result<Claim, PaymentError>> + Send {
        let attempt = ClaimToken::fresh();
        async move { self.claim_as(event_id, lease, &attempt).await }
    }

    /// Extends `event_id`'s lease to `lease` from now if `token` still holds a live claim. Returns whether it
    /// did: `false` means the lease ended (renewals came too late), and once another delivery claims the event,
    /// this holder's `complete` is refused.
    fn renew(
        &self,
        event_id: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, PaymentError>> + Send;

    /// Marks `event_id` done (kept for `retention`) if `token` holds its claim, or if the claim expired and
    /// nobody else took it. Returns whether it did: `false` when another delivery holds or finished the event.
    fn complete(
        &self,
        event_id: &str,
        token: &ClaimToken,
        retention: Duration,
    ) -> impl Future<Output = Result<bool, PaymentError>> + Send;

    /// Deletes `event_id`'s claim if `token` still holds it. Returns whether it did.
    fn release(&self, event_id: &str, token: &ClaimToken) -> impl Future<Output = Result<bool, PaymentError>> + Send;

    /// Deletes `event_id`'s claim if it is still held by `attempt`, whose [`claim_as`](Self::claim_as) failed or
    /// timed out: that claim may have landed, or land later. A store whose calls can time out after taking
    /// effect must run this after that claim (one connection does) and must not refuse it for a reason the
    /// claim did not have (the Redis store sends the script itself, so an empty script cache cannot refuse it).
    /// Returns whether it deleted a claim. The default is [`release`](Self::release) with `attempt` as the token.
    fn abandon(&self, event_id: &str, attempt: &ClaimToken) -> impl Future<Output = Result<bool, PaymentError>> + Send {
        self.release(event_id, attempt)
    }

    /// False for [`NoDedup`]: the layer then verifies only.
    fn deduplicates(&self) -> bool {
        true
    }
}

/// No deduplication: every verified delivery runs the handler. The layer's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDedup;

impl DeliveryStore for NoDedup {
    async fn claim_as(&self, _event_id: &str, _lease: Duration, attempt: &ClaimToken) -> Result<Claim, PaymentError> {
        Ok(Claim::Acquired(attempt.clone()))
    }
    async fn renew(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<bool, PaymentError> {
        Ok(true)
    }
    async fn complete(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<bool, PaymentError> {
        Ok(true)
    }
    async fn release(&self, _: &str, _: &ClaimToken) -> Result<bool, PaymentError> {
        Ok(true)
    }
    fn deduplicates(&self) -> bool {
        false
    }
}
