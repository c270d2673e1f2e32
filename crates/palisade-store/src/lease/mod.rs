//! The lease protocol: the one way Palisade lets exactly one process act on a key at a time, and remembers what
//! came of it. Idempotency records (key = scope + `Idempotency-Key`) and webhook deliveries (key = event id) both
//! run on it.
//!
//! A record moves through these states:
//!
//! ```text
//!            claim (new key)                 complete(hold)
//!   absent ─────────────────▶ HELD ──────────────────────────────▶ DONE ──▶ (expires after its TTL)
//!                               │   ▲
//!        release(hold),         │   │ claim after the lease ended: takeover, new fencing token
//!        or lease expiry        ▼   │
//!                           (claimable)
//!
//!   forget(hold): HELD ──▶ absent (the holder did nothing; the key is unused again)
//!   abandon(key, attempt): like release, for a claim whose answer never reached its caller
//! ```
//!
//! - A claim carries a **fingerprint** (what makes two requests "the same"): a key held or done with another
//!   fingerprint answers [`Claim::Mismatch`] in every state. Users without one pass [`Fingerprint::NONE`].
//! - A claim hands out a [`Hold`] with a **fencing token** strictly greater than any earlier token for the key;
//!   [`complete`](LeaseStore::complete), [`release`](LeaseStore::release), [`renew`](LeaseStore::renew) and
//!   [`forget`](LeaseStore::forget) act only while that token is the key's latest, so a holder whose lease ran
//!   out (it was slow, or thought dead) cannot overwrite the work of the holder that took over.
//! - The **lease** bounds how long a crashed holder blocks its key; a live holder renews it (the layers beat
//!   every third of it). The **TTL** bounds how long the record, and its stored answer, is kept.
//! - Every operation is atomic on its own, across every process sharing the store.
//!
//! Backends: [`MemoryStore`] (one process; answers at once, see [`StoreFuture::now`]); behind the `redis`
//! feature, `RedisStore` (Lua scripts, server time, hash-tagged keys); behind the `postgres` feature,
//! `PostgresStore` (durable rows, one statement per operation, completion inside the caller's transaction). A new backend implements
//! [`LeaseStore`] and runs the shared conformance tests in `palisade-idempotency/tests/common`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

pub use crate::error::StoreError;

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod tasks;

pub use memory::{DEFAULT_SHARDS, MemoryStore};
#[cfg(feature = "postgres")]
pub use postgres::{DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_POSTGRES_PREFIX, DEFAULT_PURGE_BATCH, PostgresStore};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, RedisStore};
pub use tasks::{ABANDON_FIRST_PAUSE, ABANDON_TRIES, abandon_in_background, beat_every, renewing};

/// A random number for [`LeaseStore::claim_as`]: distinct per call (std's `RandomState` draws fresh keys for
/// every instance), with no dependency on a random-number crate.
#[must_use]
pub fn random_attempt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

/// A SHA-256 digest of what makes two requests "the same request".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a user with nothing to compare (webhook deliveries): every claim matches.
    pub const NONE: Fingerprint = Fingerprint([0; 32]);

    /// SHA-256 of a value's JSON form.
    #[must_use]
    pub fn of_json<T: serde::Serialize + ?Sized>(value: &T) -> Fingerprint {
        use sha2::Digest;
        struct HashWriter(sha2::Sha256);
        impl std::io::Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = HashWriter(sha2::Sha256::new());
        // Writing into a hasher cannot fail; a value whose Serialize fails hashes what was written so far.
        let _ = serde_json::to_writer(&mut h, value);
        Fingerprint(h.0.finalize().into())
    }

    /// SHA-256 of bytes.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        use sha2::Digest;
        Fingerprint(sha2::Sha256::digest(bytes).into())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", hex(&self.0[..8]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fencing token: strictly increasing per key across claims and takeovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// The right to act on a claimed key: its fencing token, and where the store keeps the record. Pass it back to
/// [`complete`](LeaseStore::complete), [`release`](LeaseStore::release), [`renew`](LeaseStore::renew) or
/// [`forget`](LeaseStore::forget) of the store that made it. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    token: FencingToken,
    at: At,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    /// The storage key (every backend can find a record by it).
    Key(Arc<str>),
    /// A memory-store slot: found again without hashing or comparing the key.
    Slot(memory::SlotRef),
}

impl Hold {
    /// A hold on `key` with `token`: what a backend's claim returns.
    #[must_use]
    pub fn new(key: &str, token: FencingToken) -> Self {
        Hold { token, at: At::Key(Arc::from(key)) }
    }

    pub(crate) fn slot(at: memory::SlotRef, token: FencingToken) -> Self {
        Hold { token, at: At::Slot(at) }
    }

    /// The fencing token.
    #[must_use]
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The storage key, for backends that find records by key; `None` for a hold on a memory-store slot (which
    /// only that [`MemoryStore`] can use).
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match &self.at {
            At::Key(k) => Some(k),
            At::Slot(_) => None,
        }
    }

    /// [`key`](Self::key), or the error a backend answers for a hold another store made.
    ///
    /// # Errors
    /// [`StoreError`] for a memory-store slot.
    pub fn key_or_err(&self) -> Result<&str, StoreError> {
        self.key().ok_or_else(|| StoreError::new("a hold from another store was passed to this one"))
    }
}

/// A value a store keeps as it is (the memory store), so a replay in this process clones it instead of decoding
/// bytes; other backends store its [`encode`](KeptValue::encode)d form. Implemented for every serde type.
pub trait KeptValue: Any + Send + Sync {
    /// The value, to downcast.
    fn as_any(&self) -> &dyn Any;
    /// The JSON form (what a remote store keeps); empty when the value cannot be encoded.
    fn encode(&self) -> Bytes;
}

impl<T: serde::Serialize + Send + Sync + 'static> KeptValue for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self) -> Bytes {
        serde_json::to_vec(self).map(Bytes::from).unwrap_or_default()
    }
}

/// A completed record's stored answer: bytes, or (on a [`MemoryStore`]) the value the holder kept.
#[derive(Clone)]
#[non_exhaustive]
pub enum Payload {
    /// Encoded bytes (what every backend can store).
    Bytes(Bytes),
    /// A value kept as it is; remote backends store its encoded bytes instead.
    Value(Arc<dyn KeptValue>),
}

impl Payload {
    /// A kept value.
    pub fn value(v: impl KeptValue) -> Self {
        Payload::Value(Arc::new(v))
    }

    /// The bytes (a kept value encoded).
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Value(v) => v.encode(),
        }
    }

    /// The kept value, if it is a `T`.
    #[must_use]
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        match self {
            Payload::Value(v) => v.as_any().downcast_ref(),
            Payload::Bytes(_) => None,
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Bytes(b)
    }
}

impl From<&'static [u8]> for Payload {
    fn from(b: &'static [u8]) -> Self {
        Payload::Bytes(Bytes::from_static(b))
    }
}

/// Payloads are equal when their bytes are.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Payload {}

impl PartialEq<Bytes> for Payload {
    fn eq(&self, other: &Bytes) -> bool {
        self.to_bytes() == *other
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Payload::Value(_) => f.write_str("Value(..)"),
        }
    }
}

/// What a [`claim`](LeaseStore::claim) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller now holds the key until its lease ends, and must act and then complete, release or forget
    /// with this hold.
    Acquired {
        /// The caller's hold (its fencing token).
        hold: Hold,
        /// True when an earlier holder's lease had ended (it crashed, hung, or released after a failure).
        took_over: bool,
    },
    /// Another holder is acting and its lease is alive.
    Held {
        /// How long the lease still runs.
        lease_remaining: Duration,
    },
    /// The key is done; here is its stored answer.
    Done {
        /// The stored answer.
        response: Payload,
    },
    /// The key is known with a different fingerprint.
    Mismatch,
}

/// A record as [`get`](LeaseStore::get) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// Claimed; `lease_remaining` is zero when the lease ended (a claim would take over).
    Held {
        /// The claim's fingerprint.
        fingerprint: Fingerprint,
        /// The latest fencing token.
        token: FencingToken,
        /// Time left on the lease.
        lease_remaining: Duration,
    },
    /// Done.
    Done {
        /// The claim's fingerprint.
        fingerprint: Fingerprint,
        /// The stored answer.
        response: Payload,
    },
}

/// The future of every store operation: ready at once (no allocation) when the store answers synchronously, as
/// the memory store does, otherwise a boxed future. [`now`](Self::now) takes a ready answer without polling, so
/// a caller can stay on a synchronous path whenever the store allows it.
#[must_use = "a store operation does nothing unless awaited"]
pub struct StoreFuture<'a, T>(Repr<'a, T>);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

enum Repr<'a, T> {
    Ready(Option<Result<T, StoreError>>),
    Boxed(BoxFuture<'a, T>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// An answer known now.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        StoreFuture(Repr::Ready(Some(result)))
    }

    /// An answer that needs waiting for (boxed).
    pub fn new(fut: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> Self {
        StoreFuture(Repr::Boxed(Box::pin(fut)))
    }

    /// The answer if the store gave it at once; otherwise the future, to await.
    ///
    /// # Errors
    /// Gives the future back when the answer needs waiting for.
    pub fn now(self) -> Result<Result<T, StoreError>, Self> {
        match self.0 {
            Repr::Ready(Some(r)) => Ok(r),
            other => Err(StoreFuture(other)),
        }
    }
}

// Neither variant is structurally pinned: the boxed future is pinned on the heap.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Repr::Ready(r) => match r.take() {
                Some(r) => Poll::Ready(r),
                None => panic!("StoreFuture polled after completion"),
            },
            Repr::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for StoreFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Repr::Ready(_) => "StoreFuture::Ready",
            Repr::Boxed(_) => "StoreFuture::Pending",
        })
    }
}

/// Atomic operations on lease records, keyed by a storage key.
///
/// Implementations make each operation atomic with respect to every other operation on the same key, across
/// every process that shares the store. Object safe: layers hold an `Arc<dyn LeaseStore>`.
///
/// An error says only that the store could not be asked or did not answer: the operation may still have taken
/// effect (a stalled store executes it later). The caller decides what that means.
pub trait LeaseStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, recording `attempt` (a random number the caller draws per
    /// claim, see [`random_attempt`]) so that [`abandon`](Self::abandon) can undo a claim whose answer never
    /// arrived:
    /// - absent (or expired): HELD with a lease of `lease` and a retention of `ttl` (at least the lease),
    ///   [`Claim::Acquired`];
    /// - present with another fingerprint: [`Claim::Mismatch`] (in every state);
    /// - HELD with a live lease: [`Claim::Held`], unless the lease is this same `attempt`'s (the claim sent again
    ///   after its answer was lost: a Redis Cluster client resends a command after a dropped connection), which
    ///   is [`Claim::Acquired`] again rather than refused by itself, so the request is not answered "in
    ///   progress" by its own claim until the lease ends;
    /// - HELD with an ended lease: take over with a new, greater token ([`Claim::Acquired`], `took_over`);
    /// - DONE: [`Claim::Done`].
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim>;

    /// [`claim_as`](Self::claim_as) with a fresh attempt.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        self.claim_as(key, fingerprint, lease, ttl, random_attempt())
    }

    /// Stores `response` and marks the record DONE for `ttl`, if and only if it is HELD and the hold's token is
    /// its latest (its lease may have ended, as long as nobody took over). Returns whether it did.
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool>;

    /// Ends the lease at once (the next claim takes over), if the record is HELD and the hold's token is its
    /// latest. The fingerprint stays, so the key still refuses a different request. Returns whether it did.
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool>;

    /// Extends the lease to `lease` from now (the heartbeat of a running holder), if the record is HELD with a
    /// live lease and the hold's token is its latest. Returns whether it did: `false` means the lease ended or
    /// was taken over, and the holder's result will be fenced off.
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool>;

    /// Removes the record, if it is HELD and the hold's token is its latest: the holder did nothing, so the key
    /// is unused again (a later claim with any fingerprint acquires it). Returns whether it did.
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool>;

    /// Reads a record without changing it.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>>;

    /// Ends the lease of `key` if it is HELD and still held by the claim of `attempt`: the caller sends this
    /// after a claim failed or timed out, since the claim may still have landed (or land later: a store must run
    /// it after that claim, as one connection does, and must not refuse it for a reason the claim did not have).
    /// As with [`release`](Self::release), the fingerprint stays. Returns whether it did. The default does
    /// nothing: right for stores whose calls cannot time out after they took effect (memory).
    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        let _ = (key, attempt);
        StoreFuture::ready(Ok(false))
    }
}

impl<T: LeaseStore + ?Sized> LeaseStore for Arc<T> {
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
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        (**self).claim(key, fingerprint, lease, ttl)
    }
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool> {
        (**self).complete(hold, response, ttl)
    }
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        (**self).release(hold)
    }
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        (**self).renew(hold, lease)
    }
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        (**self).forget(hold)
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        (**self).get(key)
    }
    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        (**self).abandon(key, attempt)
    }
}
