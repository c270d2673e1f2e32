//! Where idempotency records live: a small trait of atomic operations, an in-memory store and (behind the
//! `redis` feature) a Redis store.
//!
//! A record moves through these states:
//!
//! ```text
//!            claim (new key)                 complete(token) [Success, Terminal]
//!   absent ─────────────────▶ IN_FLIGHT ─────────────────────────────────▶ COMPLETED ──▶ (expires after TTL)
//!                               │   ▲
//!        release(token)         │   │ claim after the lease ended: takeover, new fencing token
//!        [Retriable, Unknown],  ▼   │
//!        or lease expiry ──▶ (claimable)
//! ```
//!
//! While the request runs, the layer renews the lease (a heartbeat every third of it), so a live holder keeps
//! its key however long the call takes, and a holder that crashed blocks it for at most one lease. A request
//! refused before any effect (a routing refusal, a validation error, a claim whose answer was lost) is
//! *forgotten*: the key is unused again, as if it had never been seen.
//!
//! Every operation is atomic on its own, so two processes sharing a store cannot both hold a key. The fencing
//! token handed out by a claim is strictly greater than any earlier token for that key, and `complete` /
//! `release` only act when the caller still holds the latest token: a holder whose lease ran out (it was slow,
//! or it was thought dead) cannot overwrite the result of the request that took over.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::error::StoreError;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{DEFAULT_SHARDS, MemoryStore};
pub(crate) use memory::{LocalClaim, Payload, SlotRef};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, RedisStore};

/// A random number for [`IdempotencyStore::claim_as`]: distinct per call (std's `RandomState` draws fresh keys
/// for every instance), with no dependency on a random-number crate.
pub(crate) fn random_attempt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

/// The future every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A SHA-256 digest of what makes two requests "the same request".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

/// A fencing token: strictly increasing per key across claims and takeovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// What a [`claim`](IdempotencyStore::claim) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller now holds the key (IN_FLIGHT) until its lease ends, and must execute the request and then
    /// complete or release with this token.
    Acquired {
        /// The caller's fencing token.
        token: FencingToken,
        /// True when an earlier holder's lease had ended (it crashed, hung, or released after a failure).
        took_over: bool,
    },
    /// Another holder is executing the request and its lease is alive.
    InFlight {
        /// How long the lease still runs.
        lease_remaining: Duration,
    },
    /// The request completed; here is its stored response.
    Completed {
        /// The stored response, as the layer encoded it.
        response: Bytes,
    },
    /// The key is known with a different fingerprint.
    Mismatch,
}

/// A record as [`get`](IdempotencyStore::get) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// Claimed; `lease_remaining` is zero when the lease ended (a claim would take over).
    InFlight {
        /// The request's fingerprint.
        fingerprint: Fingerprint,
        /// The latest fencing token.
        token: FencingToken,
        /// Time left on the lease.
        lease_remaining: Duration,
    },
    /// Completed.
    Completed {
        /// The request's fingerprint.
        fingerprint: Fingerprint,
        /// The stored response.
        response: Bytes,
    },
}

/// Atomic operations on idempotency records, keyed by a storage key (scope + idempotency key).
///
/// Implementations must make each operation atomic with respect to every other operation on the same key,
/// across every process that shares the store. Object safe: the layer holds an `Arc<dyn IdempotencyStore>`.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`:
    /// - absent (or expired): create IN_FLIGHT with a lease of `lease` and a retention of `ttl`, return
    ///   [`Claim::Acquired`];
    /// - present with another fingerprint: [`Claim::Mismatch`] (in every state);
    /// - IN_FLIGHT with a live lease: [`Claim::InFlight`];
    /// - IN_FLIGHT with an ended lease: take over with a new, greater token ([`Claim::Acquired`], `took_over`);
    /// - COMPLETED: [`Claim::Completed`].
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim>;

    /// Stores `response` and marks the record COMPLETED for `ttl`, if and only if it is IN_FLIGHT and `token` is
    /// its latest token. Returns whether it did.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: FencingToken,
        response: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Ends the lease at once (the next claim takes over), if the record is IN_FLIGHT and `token` is its latest
    /// token. The fingerprint stays, so the key still refuses a different request. Returns whether it did.
    fn release<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool>;

    /// Reads a record without changing it.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>>;

    /// Extends the lease to `lease` from now (the heartbeat of a running request), if the record is IN_FLIGHT
    /// with a live lease and `token` is its latest token. Returns whether it did: `false` means the lease was
    /// taken over (or released), and the holder's result will be fenced off.
    fn renew<'a>(&'a self, key: &'a str, token: FencingToken, lease: Duration) -> StoreFuture<'a, bool>;

    /// Removes the record, if it is IN_FLIGHT and `token` is its latest token: the request was refused before
    /// any effect, so the key is unused again (a later request with any payload executes). Returns whether it
    /// did.
    fn forget<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool>;

    /// [`claim`](Self::claim), recording `attempt` (a random number the layer draws per claim) as the holder,
    /// so that [`abandon`](Self::abandon) can undo a claim whose answer never arrived. The default ignores the
    /// attempt: right for stores whose calls cannot time out after they took effect (memory).
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        let _ = attempt;
        self.claim(key, fingerprint, lease, ttl)
    }

    /// Removes the record if it is IN_FLIGHT and still held by the claim of `attempt`: the layer sends this after
    /// a claim failed or timed out, since the claim may still have landed (or land later: a store must run it
    /// after that claim, as one connection does). Returns whether it did. The default does nothing.
    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        let _ = (key, attempt);
        Box::pin(std::future::ready(Ok(false)))
    }
}

impl<T: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<T> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        (**self).claim(key, fingerprint, lease, ttl)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: FencingToken,
        response: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).complete(key, token, response, ttl)
    }
    fn release<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool> {
        (**self).release(key, token)
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        (**self).get(key)
    }
    fn renew<'a>(&'a self, key: &'a str, token: FencingToken, lease: Duration) -> StoreFuture<'a, bool> {
        (**self).renew(key, token, lease)
    }
    fn forget<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool> {
        (**self).forget(key, token)
    }
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        (**self).claim_as(key, fingerprint, lease, ttl, attempt)
    }
    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        (**self).abandon(key, attempt)
    }
}
