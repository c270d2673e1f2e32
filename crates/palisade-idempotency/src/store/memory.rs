//! `MemoryStore`: sharded maps behind short mutexes, with expiry. One process only.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Claim, FencingToken, Fingerprint, IdempotencyStore, Record, StoreFuture};

/// Default number of shards: enough that 2–64 cores rarely meet on one lock, small enough to sweep cheaply.
pub const DEFAULT_SHARDS: usize = 64;

/// Every this many inserts into a shard, the shard drops its expired records, so memory stays bounded by
/// the records alive within the TTL without a background task.
const SWEEP_EVERY: u32 = 1024;

/// Longest record key kept inline in the map: 46 bytes, so the storage key of a UUID idempotency key
/// (`k:` + 36 characters) needs no allocation of its own and is compared without a pointer chase.
const INLINE_KEY: usize = 46;

/// A record's storage key: inline when short, shared (`Arc<str>`) otherwise. The layer's ticket holds a copy.
/// Hashed and compared as bytes (`Borrow<[u8]>`).
#[derive(Clone)]
pub(crate) enum RecordKey {
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    Shared(Arc<str>),
}

impl RecordKey {
    pub(crate) fn new(key: &str) -> RecordKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut buf = [0; INLINE_KEY];
                buf[..key.len()].copy_from_slice(key.as_bytes());
                RecordKey::Inline { len, buf }
            }
            _ => RecordKey::Shared(Arc::from(key)),
        }
    }
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RecordKey::Inline { len, buf } => &buf[..usize::from(*len)],
            RecordKey::Shared(s) => s.as_bytes(),
        }
    }
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Copied from a `str`, so this never takes the default.
            RecordKey::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            RecordKey::Shared(s) => s,
        }
    }
}

impl From<Arc<str>> for RecordKey {
    fn from(s: Arc<str>) -> Self {
        RecordKey::Shared(s)
    }
}

impl Hash for RecordKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for RecordKey {}
impl Borrow<[u8]> for RecordKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A result kept as the value itself, so a replay in this process clones it instead of decoding JSON. It can
/// still be encoded for the byte-level API ([`MemoryStore::claim_now`], [`MemoryStore::get_now`]).
pub(crate) trait LocalValue: Send + 'static {
    fn as_any(&self) -> &dyn Any;
    /// The JSON form (what the layer would have stored as bytes); empty when the value cannot be encoded.
    fn encode(&self) -> Bytes;
}

impl<T: serde::Serialize + Send + 'static> LocalValue for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self) -> Bytes {
        serde_json::to_vec(self).map(Bytes::from).unwrap_or_default()
    }
}

/// A completed record's response: bytes (the [`IdempotencyStore`] API) or a value kept by the layer.
pub(crate) enum Payload {
    Bytes(Bytes),
    Local(Box<dyn LocalValue>),
}

impl Payload {
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Local(v) => v.encode(),
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Payload::Local(_) => f.write_str("Local(..)"),
        }
    }
}

/// What [`MemoryStore::claim_local`] found; `Completed` carries what the caller's closure made of the payload.
pub(crate) enum LocalClaim<R> {
    Acquired { key: RecordKey, token: FencingToken, took_over: bool },
    InFlight { lease_remaining: Duration },
    Completed(R),
    Mismatch,
}

#[derive(Debug)]
enum State {
    InFlight { token: FencingToken, lease_until: Instant },
    Completed { response: Payload },
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    state: State,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<RecordKey, Entry>,
    inserts: u32,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    next_token: AtomicU64,
}

/// An in-memory [`IdempotencyStore`]: sharded `HashMap`s behind `parking_lot` mutexes, records expire after
/// their TTL (checked on access, and swept from a shard every 1024 inserts). Time is `tokio::time`, so tests
/// can pause and advance it.
///
/// Good for a single process and for tests. Records do not survive a restart and are not shared between
/// processes: use `RedisStore` (feature `redis`) when several instances serve the same keys.
/// Cheap to clone (clones share the records).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store with [`DEFAULT_SHARDS`] shards.
    #[must_use]
    pub fn new() -> Self {
        MemoryStore::with_shards(DEFAULT_SHARDS)
    }

    /// A store with `shards` shards (rounded up to a power of two, at least 1).
    #[must_use]
    pub fn with_shards(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
                hasher: RandomState::new(),
                next_token: AtomicU64::new(1),
            }),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let h = self.inner.hasher.hash_one(key) as usize;
        // `shards.len()` is a power of two (see `with_shards`), so the mask picks a valid index.
        &self.inner.shards[h & (self.inner.shards.len() - 1)]
    }

    fn token(&self) -> FencingToken {
        FencingToken(self.inner.next_token.fetch_add(1, Ordering::Relaxed))
    }

    /// Number of records held, expired ones included until they are swept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when no record is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired record now.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        for s in self.inner.shards.iter() {
            s.lock().map.retain(|_, e| e.expires_at > now);
        }
    }

    /// The synchronous claim behind [`IdempotencyStore::claim`].
    pub fn claim_now(&self, key: &str, fingerprint: &Fingerprint, lease: Duration, ttl: Duration) -> Claim {
        match self.claim_local(key, fingerprint, lease, ttl, Payload::to_bytes) {
            LocalClaim::Acquired { token, took_over, .. } => Claim::Acquired { token, took_over },
            LocalClaim::InFlight { lease_remaining } => Claim::InFlight { lease_remaining },
            LocalClaim::Completed(response) => Claim::Completed { response },
            LocalClaim::Mismatch => Claim::Mismatch,
        }
    }

    /// The claim, with the shared key of an acquired record, and `on_completed` applied to a completed record's
    /// payload under the shard lock (keep it short: a clone).
    pub(crate) fn claim_local<R>(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
        ttl: Duration,
        on_completed: impl FnOnce(&Payload) -> R,
    ) -> LocalClaim<R> {
        let now = Instant::now();
        let (text, key) = (key, key.as_bytes());
        let mut guard = self.shard(key).lock();
        let shard = &mut *guard;
        if let Some((k, e)) = shard.map.get_key_value(key)
            && e.expires_at > now
        {
            if e.fingerprint != *fingerprint {
                return LocalClaim::Mismatch;
            }
            match &e.state {
                State::Completed { response } => return LocalClaim::Completed(on_completed(response)),
                State::InFlight { lease_until, .. } if *lease_until > now => {
                    return LocalClaim::InFlight { lease_remaining: *lease_until - now };
                }
                State::InFlight { .. } => {
                    let k = k.clone();
                    let token = self.token();
                    if let Some(e) = shard.map.get_mut(key) {
                        e.state = State::InFlight { token, lease_until: now + lease };
                        e.expires_at = now + ttl.max(lease);
                    }
                    return LocalClaim::Acquired { key: k, token, took_over: true };
                }
            }
        }
        let token = self.token();
        let entry = Entry {
            fingerprint: *fingerprint,
            state: State::InFlight { token, lease_until: now + lease },
            expires_at: now + ttl.max(lease),
        };
        let k = RecordKey::new(text);
        shard.map.insert(k.clone(), entry);
        shard.inserts += 1;
        if shard.inserts >= SWEEP_EVERY {
            shard.inserts = 0;
            shard.map.retain(|_, e| e.expires_at > now);
        }
        LocalClaim::Acquired { key: k, token, took_over: false }
    }

    /// The synchronous complete behind [`IdempotencyStore::complete`].
    pub fn complete_now(&self, key: &str, token: FencingToken, response: Bytes, ttl: Duration) -> bool {
        self.complete_local(key.as_bytes(), token, Payload::Bytes(response), ttl)
    }

    /// [`complete_now`](Self::complete_now) with a payload the layer may keep as a value.
    pub(crate) fn complete_local(&self, key: &[u8], token: FencingToken, response: Payload, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        match shard.map.get_mut(key) {
            Some(e) if e.expires_at > now && matches!(e.state, State::InFlight { token: t, .. } if t == token) => {
                e.state = State::Completed { response };
                e.expires_at = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// The synchronous release behind [`IdempotencyStore::release`].
    pub fn release_now(&self, key: &str, token: FencingToken) -> bool {
        self.release_local(key.as_bytes(), token)
    }

    pub(crate) fn release_local(&self, key: &[u8], token: FencingToken) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        match shard.map.get_mut(key) {
            Some(e) if e.expires_at > now && matches!(e.state, State::InFlight { token: t, .. } if t == token) => {
                e.state = State::InFlight { token, lease_until: now };
                true
            }
            _ => false,
        }
    }

    /// The synchronous read behind [`IdempotencyStore::get`].
    #[must_use]
    pub fn get_now(&self, key: &str) -> Option<Record> {
        let now = Instant::now();
        let key = key.as_bytes();
        let shard = self.shard(key).lock();
        let e = shard.map.get(key).filter(|e| e.expires_at > now)?;
        Some(match &e.state {
            State::InFlight { token, lease_until } => Record::InFlight {
                fingerprint: e.fingerprint,
                token: *token,
                lease_remaining: lease_until.saturating_duration_since(now),
            },
            State::Completed { response } => {
                Record::Completed { fingerprint: e.fingerprint, response: response.to_bytes() }
            }
        })
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        let r = self.claim_now(key, fingerprint, lease, ttl);
        Box::pin(std::future::ready(Ok(r)))
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: FencingToken,
        response: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let r = self.complete_now(key, token, response, ttl);
        Box::pin(std::future::ready(Ok(r)))
    }
    fn release<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool> {
        let r = self.release_now(key, token);
        Box::pin(std::future::ready(Ok(r)))
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        let r = self.get_now(key);
        Box::pin(std::future::ready(Ok(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: Fingerprint = Fingerprint([1; 32]);
    const OTHER: Fingerprint = Fingerprint([2; 32]);
    const LEASE: Duration = Duration::from_secs(10);
    const TTL: Duration = Duration::from_secs(100);

    fn acquired(c: Claim) -> FencingToken {
        match c {
            Claim::Acquired { token, .. } => token,
            other => panic!("expected Acquired, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_takeover_and_fencing() {
        let s = MemoryStore::with_shards(4);
        let t1 = acquired(s.claim_now("k", &FP, LEASE, TTL));
        assert!(
            matches!(s.claim_now("k", &FP, LEASE, TTL), Claim::InFlight { lease_remaining } if lease_remaining == LEASE)
        );
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL), Claim::Mismatch);
        tokio::time::advance(LEASE).await;
        let c = s.claim_now("k", &FP, LEASE, TTL);
        assert!(matches!(c, Claim::Acquired { took_over: true, .. }));
        let t2 = acquired(c);
        assert!(t2 > t1);
        // The stale holder is refused by its token.
        assert!(!s.complete_now("k", t1, Bytes::from_static(b"stale"), TTL));
        assert!(!s.release_now("k", t1));
        assert!(s.complete_now("k", t2, Bytes::from_static(b"fresh"), TTL));
        assert_eq!(s.claim_now("k", &FP, LEASE, TTL), Claim::Completed { response: Bytes::from_static(b"fresh") });
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL), Claim::Mismatch);
        // A second complete with the winning token does not overwrite either.
        assert!(!s.complete_now("k", t2, Bytes::from_static(b"again"), TTL));
    }

    #[tokio::test(start_paused = true)]
    async fn release_makes_the_key_claimable_and_keeps_the_fingerprint() {
        let s = MemoryStore::new();
        let t1 = acquired(s.claim_now("k", &FP, LEASE, TTL));
        assert!(s.release_now("k", t1));
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL), Claim::Mismatch);
        assert!(matches!(s.claim_now("k", &FP, LEASE, TTL), Claim::Acquired { took_over: true, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_the_ttl() {
        let s = MemoryStore::new();
        let t = acquired(s.claim_now("k", &FP, LEASE, TTL));
        assert!(s.complete_now("k", t, Bytes::from_static(b"r"), TTL));
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(matches!(s.get_now("k"), Some(Record::Completed { .. })));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.get_now("k"), None);
        assert!(matches!(s.claim_now("k", &OTHER, LEASE, TTL), Claim::Acquired { took_over: false, .. }));
        tokio::time::advance(TTL).await;
        s.purge_expired();
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeping_bounds_memory() {
        let s = MemoryStore::with_shards(1);
        for i in 0..SWEEP_EVERY {
            let _ = s.claim_now(&format!("old-{i}"), &FP, LEASE, Duration::from_secs(1));
        }
        tokio::time::advance(Duration::from_secs(LEASE.as_secs() + 1)).await;
        for i in 0..SWEEP_EVERY {
            let _ = s.claim_now(&format!("new-{i}"), &FP, LEASE, TTL);
        }
        assert!(s.len() <= SWEEP_EVERY as usize, "expired records were not swept: {}", s.len());
    }
}
