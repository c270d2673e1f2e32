//! `MemoryStore`: sharded slabs of records behind short mutexes, with an expiry queue. One process only.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{At, Claim, FencingToken, Fingerprint, Hold, LeaseStore, Payload, Record, StoreFuture};
use crate::index::Index;

/// Default number of shards: enough that 2–64 cores rarely meet on one lock, small enough that an idle store
/// costs little.
pub const DEFAULT_SHARDS: usize = 64;

/// Longest record key kept inline in its record: 46 bytes, so the storage key of a UUID idempotency key
/// (`k:` + 36 characters) needs no allocation of its own and is compared without a pointer chase.
const INLINE_KEY: usize = 46;

/// A record's storage key: inline when short, shared (`Arc<str>`) otherwise.
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

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Where an acquired record lives: its shard and its slot there. A ticket completes or releases through it
/// without hashing or comparing the key again; the fencing token (unique across the store) tells whether the
/// slot still holds the record it acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef {
    shard: usize,
    slot: usize,
}

/// A time on the store's clock: signed nanoseconds from the store's creation (`tokio::time`, so tests can pause
/// and advance it). Eight bytes where an `Instant` takes sixteen, in every record and queue entry, and compared
/// and added to as one integer. Signed, so an `Instant` before the store's creation (a paused clock started
/// earlier) still orders correctly; saturating, so ±292 years is the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(i64);

/// A duration in nanoseconds, saturating (seconds and nanoseconds apart: cheaper than `as_nanos`' 128 bits).
#[inline]
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_secs())
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|n| n.checked_add(i64::from(d.subsec_nanos())))
        .unwrap_or(i64::MAX)
}

impl Tick {
    #[inline]
    fn of(t: Instant, base: Instant) -> Tick {
        match t.checked_duration_since(base) {
            Some(after) => Tick(nanos(after)),
            None => Tick(-nanos(base.duration_since(t))),
        }
    }
    #[inline]
    fn plus(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(nanos(d)))
    }
    /// The time from `self` to `later` (zero when `later` is not later).
    fn until(self, later: Tick) -> Duration {
        Duration::from_nanos(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

#[derive(Debug)]
enum State {
    /// `attempt`: the claim's attempt number, until the lease is released or renewed by its holder (which
    /// proves the claim's answer arrived), so [`LeaseStore::abandon`] can undo a claim whose answer was lost.
    Held {
        token: FencingToken,
        lease_until: Tick,
        attempt: Option<u64>,
    },
    Done {
        response: Payload,
    },
}

#[derive(Debug)]
struct Slot {
    key: RecordKey,
    fingerprint: Fingerprint,
    state: State,
    expires_at: Tick,
    /// The position of this record's queue entry, counted from the shard's first entry ever (see `popped`),
    /// modulo 2^32: a queue holds far fewer entries, so the difference from `popped` is still exact.
    queued: u32,
    /// The low half of the key's hash: what the index files the record under.
    hash: u32,
}

/// Slots of the first segment of a [`Slab`]; each next segment is twice as large.
const FIRST_SEGMENT: usize = 16;

/// The records of a shard, in segments of doubling size: growing never moves a record (a `Vec` of records
/// would copy the whole shard, under its lock, each time it doubles, and touch twice the memory), and a slot
/// number stays the record's address for life.
#[derive(Debug, Default)]
struct Slab {
    /// Segment `k` has room for `FIRST_SEGMENT << k` slots, reserved when it is made (it never reallocates).
    segments: Vec<Vec<Option<Slot>>>,
    len: usize,
}

impl Slab {
    /// The segment of a slot and its place in it.
    fn locate(i: usize) -> (usize, usize) {
        let n = i + FIRST_SEGMENT;
        let top = usize::BITS - 1 - n.leading_zeros();
        ((top - FIRST_SEGMENT.trailing_zeros()) as usize, n - (1 << top))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, record: Option<Slot>) {
        if self.segments.last().is_none_or(|s| s.len() == s.capacity()) {
            self.segments.push(Vec::with_capacity(FIRST_SEGMENT << self.segments.len()));
        }
        // Just made when full or absent.
        if let Some(last) = self.segments.last_mut() {
            last.push(record);
        }
        self.len += 1;
    }
    fn get(&self, i: usize) -> Option<&Option<Slot>> {
        let (k, at) = Slab::locate(i);
        self.segments.get(k)?.get(at)
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Slot>> {
        let (k, at) = Slab::locate(i);
        self.segments.get_mut(k)?.get_mut(at)
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Option<Slot>;
    fn index(&self, i: usize) -> &Option<Slot> {
        let (k, at) = Slab::locate(i);
        &self.segments[k][at]
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, i: usize) -> &mut Option<Slot> {
        let (k, at) = Slab::locate(i);
        &mut self.segments[k][at]
    }
}

/// One shard: records in a slab (freed slots are reused, so a steady load allocates nothing for the store), an
/// index from key hash to slot, and an expiry queue in insertion order.
///
/// Every occupied slot has exactly one entry in `queue`, holding when the record is due. A completion moves its
/// record's entry in place to the new expiry (the record knows where its entry is). Reclaiming pops entries
/// whose time has come: a record that is really expired is removed; one whose expiry moved later in another
/// way (a takeover) goes back into the queue with its new time. Records are only removed here and in
/// [`purge`](Shard::purge), which drops the queue entries of what it removes, so a queue entry never points at
/// a slot that was reused.
///
/// The queue is in insertion order, which is expiry order when a store serves one TTL (the usual case; a
/// completion moves expiry later by the request's duration only, so reclaiming the records behind it waits at
/// most that long). When layers with different TTLs share a
/// store, a short-lived record is reclaimed once the records inserted before it are: memory stays bounded by
/// what the longest TTL keeps alive, and an expired record is ignored at once either way.
#[derive(Debug, Default)]
struct Shard {
    /// (slot number, low half of the key hash), 8 bytes each, seven to a cache line: a new key's lookup and
    /// insert touch one line of it, and it grows (rehashes) without visiting the records, which have usually
    /// left the cache.
    index: Index,
    /// The last fencing token handed out here. A key always lives in the same shard, so tokens from one
    /// counter per shard are strictly increasing per key and unique per slot, without a store-wide atomic that
    /// every core would contend on.
    last_token: u64,
    slots: Slab,
    free: Vec<usize>,
    /// (due, slot, low half of the key hash), 16 bytes: the hash lets reclaim find the index entry without
    /// waiting for the slot.
    queue: VecDeque<(Tick, u32, u32)>,
    /// Entries ever popped from `queue`: the entry a record's `queued` names is at `queued - popped`.
    popped: u64,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash as u32, |i| slots[i as usize].as_ref().is_some_and(|r| r.key.as_bytes() == key))
            .map(|i| i as usize)
    }

    fn insert(&mut self, mut record: Slot) -> usize {
        let (hash, expires_at) = (record.hash, record.expires_at);
        record.queued = self.next_queued();
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(record);
                i
            }
            None => {
                self.slots.push(Some(record));
                self.slots.len() - 1
            }
        };
        // A shard holds far fewer than 2^32 records (each is over 100 bytes), so the slot number fits.
        self.index.insert(hash, slot as u32);
        self.queue.push_back((expires_at, slot as u32, hash));
        slot
    }

    /// The `queued` of an entry pushed now.
    fn next_queued(&self) -> u32 {
        (self.popped as u32).wrapping_add(self.queue.len() as u32)
    }

    /// When no slot is free, removes up to [`RECLAIM`] expired records from the front of the queue, handing them
    /// to `freed` to be dropped after the shard's lock is released. `freed` is made here, only when a record is
    /// due: an insert that reclaims nothing neither clears nor later walks the batch.
    fn reclaim(&mut self, now: Tick, freed: &mut Option<Freed>) {
        if !self.free.is_empty() || self.queue.front().is_none_or(|&(due, _, _)| due > now) {
            return;
        }
        // The batch's old records and their index entries have usually left the cache: read each first, so their
        // misses overlap, then work on them.
        for &(_, slot, hash) in self.queue.iter().take(RECLAIM).take_while(|&&(due, _, _)| due <= now) {
            if let Some(Some(record)) = self.slots.get(slot as usize) {
                std::hint::black_box(record.expires_at.0);
            }
            self.index.touch(hash);
        }
        for out in freed.get_or_insert_with(Default::default).iter_mut() {
            let Some(&(due, slot, hash)) = self.queue.front() else { return };
            if due > now {
                return;
            }
            self.queue.pop_front();
            self.popped += 1;
            let queued = self.next_queued();
            let Some(record) = &mut self.slots[slot as usize] else { continue };
            if record.expires_at > now {
                record.queued = queued;
                self.queue.push_back((record.expires_at, slot, hash));
                continue;
            }
            *out = self.remove(slot as usize, hash).map(|r| r.state);
        }
    }

    /// Frees a slot and its index entry (its queue entry is the caller's business), and returns the record.
    fn remove(&mut self, slot: usize, hash: u32) -> Option<Slot> {
        self.index.remove(hash, slot as u32);
        self.free.push(slot);
        self.slots[slot].take()
    }

    /// Removes every expired record, wherever it sits in the queue.
    fn purge(&mut self, now: Tick) {
        for slot in 0..self.slots.len() {
            let Some(record) = &self.slots[slot] else { continue };
            if record.expires_at > now {
                continue;
            }
            let hash = record.hash;
            self.remove(slot, hash);
        }
        let slots = &self.slots;
        self.queue.retain(|&(_, slot, _)| slots[slot as usize].is_some());
        for (i, &(_, slot, _)) in self.queue.iter().enumerate() {
            if let Some(r) = &mut self.slots[slot as usize] {
                r.queued = (self.popped as u32).wrapping_add(i as u32);
            }
        }
    }

    /// Moves a record's queue entry to its current expiry, where it is (no second visit when it comes up).
    fn requeue_in_place(&mut self, slot: usize) {
        let Some(Some(r)) = self.slots.get(slot) else { return };
        let at = r.queued.wrapping_sub(self.popped as u32);
        if let Some(entry) = self.queue.get_mut(at as usize)
            && entry.1 as usize == slot
        {
            entry.0 = r.expires_at;
        }
    }

    fn live(&mut self, slot: usize, now: Tick) -> Option<&mut Slot> {
        self.slots.get_mut(slot)?.as_mut().filter(|r| r.expires_at > now)
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// Most records reclaimed by an insert that finds no free slot. Reclaiming in batches lets the processor
/// overlap the cache misses of several old records (each its own chain: slot, index entry) instead of taking
/// one chain per insert; at most this many expired records wait for their batch.
const RECLAIM: usize = 16;

/// The states of records reclaimed under a shard's lock, dropped once it is released: freeing a record's
/// response touches memory that has usually left the cache, and those misses should not lengthen the critical
/// section.
type Freed = [Option<State>; RECLAIM];

/// Drops a batch of reclaimed records' states. Each kept response's count is read first: the drops' decrements
/// are atomic read-modify-writes, which the processor does not overlap with one another, so without the reads
/// each would wait for its own cache miss in turn.
fn drop_freed(freed: Option<Freed>) {
    let Some(freed) = freed else { return };
    for state in &freed {
        if let Some(State::Done { response: Payload::Value(value) }) = state {
            std::hint::black_box(Arc::strong_count(value));
        }
    }
    drop(freed);
}

fn next_token(last: &mut u64) -> FencingToken {
    *last += 1;
    FencingToken(*last)
}

/// A shard on cache lines of its own, so cores working on neighbouring shards do not contend on one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

impl std::ops::Deref for Padded {
    type Target = Mutex<Shard>;
    fn deref(&self) -> &Mutex<Shard> {
        &self.0
    }
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Padded]>,
    hasher: RandomState,
    /// Time zero of the records' [`Tick`]s.
    base: Instant,
}

/// An in-memory [`LeaseStore`]: sharded slabs of records behind `parking_lot` mutexes. Records expire
/// after their TTL: an expired record is ignored at once, and its memory is reclaimed in insertion order by
/// later inserts into its shard (in batches, when no slot is free), so memory stays bounded by the records
/// alive within the TTL without a background task, and a steady load reuses slots instead of allocating. Time
/// is `tokio::time`, so tests can pause and advance it.
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
                shards: (0..n).map(|_| Padded::default()).collect(),
                hasher: RandomState::new(),
                base: Instant::now(),
            }),
        }
    }

    /// The key's hash (SipHash with a per-store random key, so clients cannot aim keys at one bucket) and its
    /// shard. The shard takes bits 32 and up; the index files the record under the low 32 bits (its low bits
    /// place it, all 32 are compared).
    fn locate(&self, key: &[u8]) -> (u64, usize) {
        // The key's bytes alone, in one write (`hash_one` would also hash its length first: one key per hash, so
        // the length adds no protection).
        let mut hasher = self.inner.hasher.build_hasher();
        hasher.write(key);
        let hash = hasher.finish();
        // `shards.len()` is a power of two (see `with_shards`), so the mask picks a valid index.
        (hash, (hash >> 32) as usize & (self.inner.shards.len() - 1))
    }

    /// The time now on the records' clock.
    fn now(&self) -> Tick {
        Tick::of(Instant::now(), self.inner.base)
    }

    /// Number of records held, expired ones included until they are reclaimed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when no record is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired record now (a full pass over every shard).
    pub fn purge_expired(&self) {
        let now = self.now();
        for s in self.inner.shards.iter() {
            s.lock().purge(now);
        }
    }

    /// The claim, with a hold on the record's slot.
    fn claim_now(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: Option<u64>,
    ) -> Claim {
        let now = self.now();
        let (hash, shard_no) = self.locate(key.as_bytes());
        // Declared before the guard, so dropped after it.
        let mut freed: Option<Freed> = None;
        let mut guard = self.inner.shards[shard_no].lock();
        let shard = &mut *guard;
        if let Some(slot) = shard.find(hash, key.as_bytes())
            && let Some(r) = &mut shard.slots[slot]
        {
            let took_over = if r.expires_at <= now {
                // Expired but not reclaimed yet: the key is new again; reuse the slot (its queue entry stays
                // and is re-queued with the new expiry when it comes up).
                r.fingerprint = *fingerprint;
                false
            } else if r.fingerprint != *fingerprint {
                return Claim::Mismatch;
            } else {
                match &r.state {
                    // A clone of the payload: bytes or a kept value, shared, so no allocation under the lock.
                    State::Done { response } => return Claim::Done { response: response.clone() },
                    // The same claim again (its answer was lost and the client resent it): answered as the
                    // first, so the resend is not refused as in flight by its own claim.
                    State::Held { token, lease_until, attempt: Some(a) }
                        if *lease_until > now && Some(*a) == attempt =>
                    {
                        return Claim::Acquired {
                            hold: Hold::slot(SlotRef { shard: shard_no, slot }, *token),
                            took_over: false,
                        };
                    }
                    State::Held { lease_until, .. } if *lease_until > now => {
                        return Claim::Held { lease_remaining: now.until(*lease_until) };
                    }
                    State::Held { .. } => true,
                }
            };
            let token = next_token(&mut shard.last_token);
            r.state = State::Held { token, lease_until: now.plus(lease), attempt };
            r.expires_at = now.plus(ttl.max(lease));
            return Claim::Acquired { hold: Hold::slot(SlotRef { shard: shard_no, slot }, token), took_over };
        }
        shard.reclaim(now, &mut freed);
        let token = next_token(&mut shard.last_token);
        let slot = shard.insert(Slot {
            key: RecordKey::new(key),
            hash: hash as u32,
            fingerprint: *fingerprint,
            state: State::Held { token, lease_until: now.plus(lease), attempt },
            expires_at: now.plus(ttl.max(lease)),
            queued: 0,
        });
        drop(guard);
        drop_freed(freed);
        Claim::Acquired { hold: Hold::slot(SlotRef { shard: shard_no, slot }, token), took_over: false }
    }

    /// The slot a hold names: its own for a hold this store made, found by key for one made by key.
    fn slot_of(&self, hold: &Hold) -> Option<SlotRef> {
        match &hold.at {
            At::Slot(at) => Some(*at),
            At::Key(key) => {
                let (hash, shard) = self.locate(key.as_bytes());
                let slot = self.inner.shards[shard].lock().find(hash, key.as_bytes())?;
                Some(SlotRef { shard, slot })
            }
        }
    }

    /// Runs `op` on the live record a hold names, if the hold's token is its latest, and re-queues the record
    /// when `op` says its expiry moved. The token check also covers a slot that was reclaimed and reused: tokens
    /// are unique per shard, and a slot belongs to one shard.
    fn with_held(&self, hold: &Hold, op: impl FnOnce(&mut Slot, Tick) -> bool) -> bool {
        let Some(at) = self.slot_of(hold) else { return false };
        let now = self.now();
        let mut shard = self.inner.shards[at.shard].lock();
        let moved = match shard.live(at.slot, now) {
            Some(r) if matches!(r.state, State::Held { token, .. } if token == hold.token) => op(r, now),
            _ => return false,
        };
        if moved {
            shard.requeue_in_place(at.slot);
        }
        true
    }

    fn complete_now(&self, hold: &Hold, response: Payload, ttl: Duration) -> bool {
        self.with_held(hold, |r, now| {
            r.state = State::Done { response };
            r.expires_at = now.plus(ttl);
            true
        })
    }

    fn release_now(&self, hold: &Hold) -> bool {
        self.with_held(hold, |r, now| {
            r.state = State::Held { token: hold.token, lease_until: now, attempt: None };
            false
        })
    }

    /// Fails (without acting) when the lease already ended.
    fn renew_now(&self, hold: &Hold, lease: Duration) -> bool {
        let mut live = false;
        let acted = self.with_held(hold, |r, now| {
            let State::Held { lease_until, .. } = r.state else { return false };
            if lease_until <= now {
                return false;
            }
            live = true;
            r.state = State::Held { token: hold.token, lease_until: now.plus(lease), attempt: None };
            let grew = r.expires_at < now.plus(lease);
            if grew {
                r.expires_at = now.plus(lease);
            }
            grew
        });
        acted && live
    }

    /// The record expires now, which every operation treats as absent (a claim makes the key new again); its
    /// slot is reclaimed in queue order like any expired record.
    fn forget_now(&self, hold: &Hold) -> bool {
        self.with_held(hold, |r, now| {
            r.state = State::Held { token: hold.token, lease_until: now, attempt: None };
            r.expires_at = now;
            true
        })
    }

    /// Ends the lease of a claim still held by `attempt` (as `release` does: the fingerprint stays).
    fn abandon_now(&self, key: &str, attempt: u64) -> bool {
        let now = self.now();
        let (hash, shard) = self.locate(key.as_bytes());
        let mut shard = self.inner.shards[shard].lock();
        let Some(slot) = shard.find(hash, key.as_bytes()) else { return false };
        match shard.live(slot, now) {
            Some(r) if matches!(r.state, State::Held { attempt: Some(a), .. } if a == attempt) => {
                if let State::Held { token, .. } = r.state {
                    r.state = State::Held { token, lease_until: now, attempt: None };
                }
                true
            }
            _ => false,
        }
    }

    fn get_now(&self, key: &str) -> Option<Record> {
        let now = self.now();
        let (hash, shard) = self.locate(key.as_bytes());
        let mut shard = self.inner.shards[shard].lock();
        let slot = shard.find(hash, key.as_bytes())?;
        let r = shard.live(slot, now)?;
        Some(match &r.state {
            State::Held { token, lease_until, .. } => {
                Record::Held { fingerprint: r.fingerprint, token: *token, lease_remaining: now.until(*lease_until) }
            }
            State::Done { response } => Record::Done { fingerprint: r.fingerprint, response: response.clone() },
        })
    }
}

/// Every operation answers at once: its [`StoreFuture`] is ready ([`StoreFuture::now`]) and allocates nothing.
impl LeaseStore for MemoryStore {
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::ready(Ok(self.claim_now(key, fingerprint, lease, ttl, Some(attempt))))
    }
    /// No attempt to draw: the memory store's answers are never lost, so nothing needs abandoning or resending (no
    /// attempt is recorded).
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::ready(Ok(self.claim_now(key, fingerprint, lease, ttl, None)))
    }
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(self.complete_now(hold, response, ttl)))
    }
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(self.release_now(hold)))
    }
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(self.renew_now(hold, lease)))
    }
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(self.forget_now(hold)))
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        StoreFuture::ready(Ok(self.get_now(key)))
    }
    /// The memory store's answers are never lost, but a wrapper around it (a test's stalled store) may lose
    /// them: the claim's attempt is kept, and undone here like the Redis store does.
    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(self.abandon_now(key, attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: Fingerprint = Fingerprint([1; 32]);
    const OTHER: Fingerprint = Fingerprint([2; 32]);
    const LEASE: Duration = Duration::from_secs(10);
    const TTL: Duration = Duration::from_secs(100);

    fn acquired(c: Claim) -> Hold {
        match c {
            Claim::Acquired { hold, .. } => hold,
            other => panic!("expected Acquired, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_takeover_and_fencing() {
        let s = MemoryStore::with_shards(4);
        let t1 = acquired(s.claim_now("k", &FP, LEASE, TTL, None));
        assert!(
            matches!(s.claim_now("k", &FP, LEASE, TTL, None), Claim::Held { lease_remaining } if lease_remaining == LEASE)
        );
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL, None), Claim::Mismatch);
        tokio::time::advance(LEASE).await;
        let c = s.claim_now("k", &FP, LEASE, TTL, None);
        assert!(matches!(c, Claim::Acquired { took_over: true, .. }));
        let t2 = acquired(c);
        assert!(t2.token() > t1.token());
        // The stale holder is refused by its token.
        assert!(!s.complete_now(&t1, b"stale"[..].into(), TTL));
        assert!(!s.release_now(&t1));
        assert!(s.complete_now(&t2, b"fresh"[..].into(), TTL));
        assert_eq!(s.claim_now("k", &FP, LEASE, TTL, None), Claim::Done { response: b"fresh"[..].into() });
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL, None), Claim::Mismatch);
        // A second complete with the winning token does not overwrite either.
        assert!(!s.complete_now(&t2, b"again"[..].into(), TTL));
    }

    #[test]
    fn slab_slots_keep_their_place_as_it_grows() {
        let mut slab = Slab::default();
        let mut seen = std::collections::HashSet::new();
        slab.push(None);
        let first = slab.segments[0].as_ptr();
        for i in 1..1000 {
            assert!(seen.insert(Slab::locate(i)), "slot {i} shares a place");
            slab.push(None);
            assert!(slab.get(i).is_some() && slab.get(i + 1).is_none());
        }
        assert_eq!(slab.segments[0].as_ptr(), first, "a segment never moves");
        assert!(!seen.contains(&Slab::locate(0)));
        assert_eq!(slab.len(), 1000);
        assert!(slab.segments.iter().all(|s| s.len() <= s.capacity()));
        assert_eq!(slab.segments.iter().map(Vec::capacity).sum::<usize>(), FIRST_SEGMENT * ((1 << 6) - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn release_makes_the_key_claimable_and_keeps_the_fingerprint() {
        let s = MemoryStore::new();
        let t1 = acquired(s.claim_now("k", &FP, LEASE, TTL, None));
        assert!(s.release_now(&t1));
        assert_eq!(s.claim_now("k", &OTHER, LEASE, TTL, None), Claim::Mismatch);
        assert!(matches!(s.claim_now("k", &FP, LEASE, TTL, None), Claim::Acquired { took_over: true, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_the_ttl() {
        let s = MemoryStore::new();
        let t = acquired(s.claim_now("k", &FP, LEASE, TTL, None));
        assert!(s.complete_now(&t, b"r"[..].into(), TTL));
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(matches!(s.get_now("k"), Some(Record::Done { .. })));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.get_now("k"), None);
        assert!(matches!(s.claim_now("k", &OTHER, LEASE, TTL, None), Claim::Acquired { took_over: false, .. }));
        tokio::time::advance(TTL).await;
        s.purge_expired();
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn inserts_reclaim_expired_records_and_reuse_their_slots() {
        const N: usize = 1000;
        let s = MemoryStore::with_shards(1);
        for i in 0..N {
            let t = acquired(s.claim_now(&format!("old-{i}"), &FP, LEASE, Duration::from_secs(1), None));
            // Half complete (their queue entries move to the later expiry in place), half stay in flight.
            if i % 2 == 0 {
                assert!(s.complete_now(&t, b"r"[..].into(), Duration::from_secs(1)));
            }
        }
        let slab = s.inner.shards[0].lock().slots.len();
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        for i in 0..N {
            let _ = s.claim_now(&format!("new-{i}"), &FP, LEASE, TTL, None);
            // An insert that finds no free slot reclaims a batch first, so the count never grows past N + 1.
            assert!(s.len() <= N + 1, "expired records were not reclaimed: {}", s.len());
        }
        assert_eq!(s.len(), N);
        let shard = s.inner.shards[0].lock();
        assert_eq!(shard.slots.len(), slab, "new records must reuse reclaimed slots");
        assert_eq!(shard.index.len(), N, "reclaimed records must leave the index");
        assert_eq!(shard.queue.len(), N, "one queue entry per record");
        drop(shard);
        for i in 0..N {
            assert_eq!(s.get_now(&format!("old-{i}")), None);
            assert!(matches!(s.get_now(&format!("new-{i}")), Some(Record::Held { .. })));
        }
    }

    /// A kept value that checks, when dropped, that its shard's lock is free.
    struct DropProbe {
        store: MemoryStore,
        dropped_unlocked: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl serde::Serialize for DropProbe {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_unit()
        }
    }
    impl Drop for DropProbe {
        fn drop(&mut self) {
            if self.store.inner.shards[0].try_lock().is_some() {
                self.dropped_unlocked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reclaimed_records_are_dropped_after_the_shard_lock_is_released() {
        let s = MemoryStore::with_shards(1);
        let dropped_unlocked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..3 {
            let hold = acquired(s.claim_now(&format!("k{i}"), &FP, LEASE, TTL, None));
            let probe = DropProbe { store: s.clone(), dropped_unlocked: dropped_unlocked.clone() };
            assert!(s.complete_now(&hold, Payload::value(probe), TTL));
        }
        tokio::time::advance(TTL).await;
        let _ = s.claim_now("new", &FP, LEASE, TTL, None);
        assert_eq!(s.len(), 1, "the three expired records were reclaimed by the insert");
        assert_eq!(dropped_unlocked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_completion_moves_its_queue_entry_in_place() {
        let s = MemoryStore::with_shards(1);
        let ttl = Duration::from_secs(10);
        let mut tokens = vec![];
        for k in ["a", "b", "c"] {
            tokens.push(acquired(s.claim_now(k, &FP, LEASE, ttl, None)));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.complete_now(&tokens[1], b"r"[..].into(), ttl));
        {
            let shard = s.inner.shards[0].lock();
            let dues: Vec<_> = shard
                .queue
                .iter()
                .map(|&(due, slot, _)| (due, shard.slots[slot as usize].as_ref().unwrap().key.as_str().to_owned()))
                .collect();
            assert_eq!(dues.len(), 3, "still one entry per record");
            for (due, key) in &dues {
                let record =
                    shard.slots[shard.find(s.locate(key.as_bytes()).0, key.as_bytes()).unwrap()].as_ref().unwrap();
                assert_eq!(*due, record.expires_at, "{key}: the queue holds the record's current expiry");
            }
        }
        // At 10 s "a" and "c" are due; "b" (completed at 1 s) is not, and nothing is visited twice.
        tokio::time::advance(Duration::from_secs(9)).await;
        let _ = s.claim_now("d", &FP, LEASE, ttl, None);
        assert_eq!(s.get_now("b").map(|r| matches!(r, Record::Done { .. })), Some(true));
        assert_eq!(s.inner.shards[0].lock().popped, 1, "the front entry was popped once: \"a\", removed");
        tokio::time::advance(Duration::from_secs(1)).await;
        s.purge_expired();
        assert_eq!(s.len(), 1, "only \"d\" is left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slot_refuses_the_old_token() {
        let s = MemoryStore::with_shards(1);
        let hold = acquired(s.claim_now("a", &FP, LEASE, LEASE, None));
        tokio::time::advance(LEASE).await;
        s.purge_expired();
        let again = acquired(s.claim_now("b", &FP, LEASE, LEASE, None));
        assert_eq!(hold.at, again.at, "the test needs the slot to be reused");
        assert!(!s.complete_now(&hold, Payload::Bytes(bytes::Bytes::new()), TTL));
        assert!(!s.release_now(&hold));
        assert!(matches!(s.get_now("b"), Some(Record::Held { lease_remaining, .. }) if lease_remaining == LEASE));
    }

    #[test]
    fn ticks_order_add_and_subtract_like_instants() {
        let base = Instant::now();
        let later = base + Duration::from_millis(1500);
        let (b, l) = (Tick::of(base, base), Tick::of(later, base));
        assert_eq!(b, Tick(0));
        assert_eq!(b.until(l), Duration::from_millis(1500));
        assert_eq!(l.until(b), Duration::ZERO, "not later: zero");
        assert_eq!(b.plus(Duration::from_millis(1500)), l);
        assert_eq!(b.plus(Duration::MAX), Tick(i64::MAX), "saturates instead of overflowing");
        // An instant before the store's time zero (a paused clock started earlier) still orders before it.
        let earlier = Tick::of(base, later);
        assert!(earlier < Tick(0));
        assert_eq!(earlier.until(Tick(0)), Duration::from_millis(1500));
    }

    #[test]
    fn records_and_queue_entries_stay_small() {
        // Every new key writes a slot and a queue entry into memory that is usually cold: their sizes are what
        // a new record costs in page faults and cache misses.
        assert!(size_of::<Option<Slot>>() <= 136, "{}", size_of::<Option<Slot>>());
        assert_eq!(size_of::<(Tick, u32, u32)>(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn purge_drops_expired_records_and_keeps_live_ones() {
        let s = MemoryStore::with_shards(2);
        for i in 0..100 {
            let ttl = if i % 2 == 0 { Duration::from_secs(1) } else { TTL };
            let _ = s.claim_now(&format!("k{i}"), &FP, Duration::from_millis(1), ttl, None);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        s.purge_expired();
        assert_eq!(s.len(), 50);
        assert!((0..100).all(|i| s.get_now(&format!("k{i}")).is_some() == (i % 2 == 1)));
    }
}
