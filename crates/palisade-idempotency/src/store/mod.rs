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
}
